//! Framing of data-plane messages on a libp2p stream: a request, then its response, and
//! again. Nothing here closes a stream: whoever owns it decides whether it carries more.
//!
//! A message is a 4-byte big-endian length followed by that many bytes of its encoding
//! ([`medley_core::protocol`]). The length is checked against [`MAX_MESSAGE_SIZE`] before
//! any buffer is allocated, so a peer cannot make us reserve more than that.
//!
//! Blob responses (shards, segments) are written and read in parts: header, then the bytes
//! straight from or into their own buffer. The bytes on the wire are the same; two copies of
//! every blob are saved. A blob read is hashed part by part as it arrives ([`Reply::blob_hash`]),
//! so after its last byte only the last part is left to hash, not the whole blob.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use medley_core::protocol::{
    MAX_MESSAGE_SIZE, Request, Response, TAG_SEGMENT, TAG_SHARD, VarintReader, WireError,
};
use medley_core::{Hash, Hasher};

/// An inbound request as decoded from the wire: either a request, or why it was not one.
/// A malformed request still gets an answer (an error code) rather than a dropped stream.
pub(crate) type Inbound = Result<Request, WireError>;

/// A response with, when it was read off the wire and carries a blob, the BLAKE3 of that
/// blob, computed over exactly the bytes in it while they arrived.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The response.
    pub response: Response,
    /// The blob's hash; `None` for responses without a blob and for responses to be sent.
    pub blob_hash: Option<Hash>,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Self {
            response,
            blob_hash: None,
        }
    }
}

/// Bytes of a blob read (and hashed) at a time: whole BLAKE3 chunks, enough of them for its
/// widest SIMD, and few enough that little is left to hash after the last byte.
const HASH_PART: usize = 16 * 1024;

/// Reads a frame's length and checks it against [`MAX_MESSAGE_SIZE`] before anything is
/// allocated.
pub(crate) async fn read_len<T: AsyncRead + Unpin + Send>(
    io: &mut T,
) -> io::Result<Result<usize, WireError>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    Ok(if len > MAX_MESSAGE_SIZE {
        Err(WireError::TooLarge {
            size: len,
            max: MAX_MESSAGE_SIZE,
        })
    } else {
        Ok(len)
    })
}

#[cfg(test)]
async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
) -> io::Result<Result<Vec<u8>, WireError>> {
    let len = match read_len(io).await? {
        Ok(len) => len,
        Err(e) => return Ok(Err(e)),
    };
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(Ok(buf))
}

/// Writes a frame of `head` then `body`. The length and `head` go in one write, so a small
/// head is copied rather than written alone; `body`, which may be a whole blob, straight from
/// its buffer.
async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    head: &[u8],
    body: &[u8],
) -> io::Result<()> {
    let size = head.len() + body.len();
    if size > MAX_MESSAGE_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            WireError::TooLarge {
                size,
                max: MAX_MESSAGE_SIZE,
            },
        ));
    }
    // The length fits in u32: MAX_MESSAGE_SIZE is far below 4 GiB.
    let mut prefix = Vec::with_capacity(4 + head.len());
    prefix.extend_from_slice(&(size as u32).to_be_bytes());
    prefix.extend_from_slice(head);
    io.write_all(&prefix).await?;
    if !body.is_empty() {
        io.write_all(body).await?;
    }
    io.flush().await
}

/// Reads a response frame, reading a blob's bytes straight into their own buffer and
/// hashing them as they come.
async fn read_response_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
) -> io::Result<Result<Reply, WireError>> {
    let len = match read_len(io).await? {
        Ok(len) => len,
        Err(e) => return Ok(Err(e)),
    };
    if len == 0 {
        return Ok(Response::decode(&[]).map(Reply::from));
    }
    let mut tag = [0u8; 1];
    io.read_exact(&mut tag).await?;
    if tag[0] != TAG_SHARD && tag[0] != TAG_SEGMENT {
        let mut buf = vec![0u8; len];
        buf[0] = tag[0];
        io.read_exact(&mut buf[1..]).await?;
        return Ok(Response::decode(&buf).map(Reply::from));
    }
    let mut varint = VarintReader::default();
    let blob_len = loop {
        if 1 + varint.len() >= len {
            return Ok(Err(WireError::Malformed {
                reason: "frame ends inside the blob length".into(),
            }));
        }
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        match varint.push(b[0]) {
            Ok(Some(n)) => break n,
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
    };
    let header = 1 + varint.len();
    if blob_len != (len - header) as u64 {
        return Ok(Err(WireError::Malformed {
            reason: format!(
                "blob of {blob_len} bytes in a frame with {} bytes left",
                len - header
            ),
        }));
    }
    let mut data = vec![0u8; len - header];
    let mut hasher = Hasher::new();
    for part in data.chunks_mut(HASH_PART) {
        io.read_exact(part).await?;
        hasher.update(part);
    }
    let blob_hash = Some(hasher.finalize());
    Ok(Response::from_blob(tag[0], data)
        .map(|response| Reply {
            response,
            blob_hash,
        })
        .ok_or_else(|| WireError::Malformed {
            reason: "unknown blob tag".into(),
        }))
}

/// Reads the `len` bytes of a request whose length was read, and decodes it.
pub(crate) async fn read_request_body<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    len: usize,
) -> io::Result<Inbound> {
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(Request::decode(&buf))
}

/// Reads a response, a blob hashed as it arrives. A malformed one is an I/O error.
pub(crate) async fn read_response<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Reply> {
    read_response_frame(io)
        .await?
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes a request.
pub(crate) async fn write_request<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    request: &Request,
) -> io::Result<()> {
    write_frame(io, &[], &request.encode()).await
}

/// Writes a response; a blob goes straight from its buffer.
pub(crate) async fn write_response<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    response: &Response,
) -> io::Result<()> {
    let (header, payload) = response.encode_parts();
    write_frame(io, &header, payload.unwrap_or_default()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use medley_core::ShardId;

    #[tokio::test]
    async fn frames_round_trip_and_bound_lengths() {
        let req = Request::GetShard {
            id: ShardId::of(b"x"),
        };
        let mut buf = Cursor::new(Vec::new());
        write_frame(&mut buf, &[], &req.encode()).await.unwrap();
        let mut rd = Cursor::new(buf.into_inner());
        let bytes = read_frame(&mut rd).await.unwrap().unwrap();
        assert_eq!(Request::decode(&bytes).unwrap(), req);

        // A frame that claims 1 GiB is refused before anything is allocated or read.
        let mut huge = Cursor::new((1u32 << 30).to_be_bytes().to_vec());
        assert!(matches!(
            read_frame(&mut huge).await.unwrap(),
            Err(WireError::TooLarge { .. })
        ));

        // A frame cut short is an I/O error.
        let mut short = Cursor::new(vec![0, 0, 0, 10, 1, 2]);
        assert!(read_frame(&mut short).await.is_err());
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    #[tokio::test]
    async fn streamed_responses_match_postcard_and_reject_lies() {
        for r in [
            Response::Segment {
                data: (0..300_000u32).map(|i| i as u8).collect(),
            },
            Response::Shard { data: vec![] },
            Response::Stored,
            Response::Has {
                present: vec![true],
            },
            Response::error(medley_core::protocol::ErrorCode::BUSY, "busy"),
        ] {
            let mut rd = Cursor::new(framed(&r.encode()));
            let reply = read_response_frame(&mut rd).await.unwrap().unwrap();
            // A blob's hash is of exactly its bytes; other responses have none.
            let expected = match &r {
                Response::Segment { data } | Response::Shard { data } => {
                    Some(medley_core::Hash::of(data))
                }
                _ => None,
            };
            assert_eq!(reply.blob_hash, expected);
            assert_eq!(reply.response, r);
            // Written by write_response, twice on one stream: each read takes exactly its
            // own frame, as kept streams need.
            let mut buf = Cursor::new(Vec::new());
            write_response(&mut buf, &r).await.unwrap();
            write_response(&mut buf, &r).await.unwrap();
            assert_eq!(
                buf.get_ref()[..],
                [framed(&r.encode()), framed(&r.encode())].concat()[..]
            );
            let mut rd = Cursor::new(buf.into_inner());
            for _ in 0..2 {
                assert_eq!(read_response(&mut rd).await.unwrap().response, r);
            }
        }
        // A blob length that disagrees with the frame length.
        let mut lie = Response::Shard { data: vec![1; 10] }.encode();
        lie[1] = 11;
        let mut rd = Cursor::new(framed(&lie));
        assert!(matches!(
            read_response_frame(&mut rd).await.unwrap(),
            Err(WireError::Malformed { .. })
        ));
        // A frame that ends inside the length varint.
        let mut rd = Cursor::new(framed(&[TAG_SEGMENT, 0x80]));
        assert!(matches!(
            read_response_frame(&mut rd).await.unwrap(),
            Err(WireError::Malformed { .. })
        ));
    }
}
