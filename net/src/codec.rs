//! Framing of data-plane messages on a libp2p stream: one request, then its response.
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
    BLOB_INTACT, BLOB_WITHDRAWN, ErrorCode, MAX_MESSAGE_SIZE, Request, Response, TAG_SEGMENT,
    TAG_SHARD, VarintReader, WireError,
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

/// Bytes of a blob read (and hashed) at a time: whole BLAKE3 chunks, several at once.
const HASH_PART: usize = 64 * 1024;

/// Reads a frame's length and checks it against [`MAX_MESSAGE_SIZE`] before anything is
/// allocated.
async fn read_len<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Result<usize, WireError>> {
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

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            WireError::TooLarge {
                size: bytes.len(),
                max: MAX_MESSAGE_SIZE,
            },
        ));
    }
    // The length fits in u32: MAX_MESSAGE_SIZE is far below 4 GiB.
    let len = (bytes.len() as u32).to_be_bytes();
    io.write_all(&len).await?;
    io.write_all(bytes).await?;
    io.close().await
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
    // The status byte: the sender vouches for the blob, or takes it back with an error.
    let mut status = [0u8; 1];
    io.read_exact(&mut status).await?;
    match status[0] {
        BLOB_INTACT => {}
        BLOB_WITHDRAWN => {
            return Ok(read_frame(io)
                .await?
                .and_then(|bytes| Response::decode(&bytes))
                .and_then(|r| match r {
                    Response::Error { .. } => Ok(Reply::from(r)),
                    _ => Err(WireError::Malformed {
                        reason: "a withdrawn blob must be followed by an error".into(),
                    }),
                }));
        }
        other => {
            return Ok(Err(WireError::Malformed {
                reason: format!("unknown blob status {other}"),
            }));
        }
    }
    Ok(Response::from_blob(tag[0], data)
        .map(|response| Reply {
            response,
            blob_hash,
        })
        .ok_or_else(|| WireError::Malformed {
            reason: "unknown blob tag".into(),
        }))
}

/// Reads a request: a malformed or oversized one is `Ok(Err(_))`, to be answered with its
/// error code; only a broken stream is an I/O error.
pub(crate) async fn read_request<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Inbound> {
    Ok(read_frame(io)
        .await?
        .and_then(|bytes| Request::decode(&bytes)))
}

/// Reads a response, a blob hashed as it arrives. A malformed one is an I/O error.
pub(crate) async fn read_response<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Reply> {
    read_response_frame(io)
        .await?
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes a request and closes the sending side.
pub(crate) async fn write_request<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    request: &Request,
) -> io::Result<()> {
    write_frame(io, &request.encode()).await
}

/// Writes a response and closes the sending side; a blob goes straight from its buffer.
/// With `id`, the blob is checked against it while it is sent, and withdrawn
/// with an error if it does not hash to it (see [`medley_core::protocol::BLOB_WITHDRAWN`]).
/// Only the blob's last part waits for the check. Returns whether the blob was intact.
pub(crate) async fn write_checked_response<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    response: &Response,
    id: Option<Hash>,
) -> io::Result<bool> {
    let (header, payload) = response.encode_parts();
    let Some(payload) = payload else {
        return write_frame(io, &header).await.map(|()| true);
    };
    let total = header.len() + payload.len();
    if total > MAX_MESSAGE_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            WireError::TooLarge {
                size: total,
                max: MAX_MESSAGE_SIZE,
            },
        ));
    }
    // total fits in u32: MAX_MESSAGE_SIZE is far below 4 GiB.
    io.write_all(&(total as u32).to_be_bytes()).await?;
    io.write_all(&header).await?;
    match id {
        None => io.write_all(payload).await?,
        Some(id) => {
            // Each part is hashed after it is handed to the transport, while the transport
            // sends it; the last is held back until the whole blob is known good.
            let last = payload.len().saturating_sub(1) / HASH_PART * HASH_PART;
            let (sent, held) = payload.split_at(last);
            let mut hasher = Hasher::new();
            for part in sent.chunks(HASH_PART) {
                io.write_all(part).await?;
                hasher.update(part);
            }
            hasher.update(held);
            let got = hasher.finalize();
            if got != id {
                io.write_all(&vec![0u8; held.len()]).await?;
                io.write_all(&[BLOB_WITHDRAWN]).await?;
                let error = Response::error(
                    ErrorCode::INTERNAL,
                    format!("the stored copy of {id} is corrupt: its bytes hash to {got}"),
                );
                write_frame(io, &error.encode()).await?;
                return Ok(false);
            }
            io.write_all(held).await?;
        }
    }
    io.write_all(&[BLOB_INTACT]).await?;
    io.close().await.map(|()| true)
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
        write_frame(&mut buf, &req.encode()).await.unwrap();
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
            let mut wire = framed(&r.encode());
            if matches!(r, Response::Segment { .. } | Response::Shard { .. }) {
                wire.push(BLOB_INTACT);
            }
            // What the writer sends is exactly that: the frame, then a blob's status.
            let mut written = Cursor::new(Vec::new());
            write_checked_response(&mut written, &r, None)
                .await
                .unwrap();
            assert_eq!(written.into_inner(), wire);
            let mut rd = Cursor::new(wire);
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
        }
        // A blob without its status byte is cut short; an unknown status is malformed.
        let blob = Response::Shard { data: vec![1; 10] };
        let mut rd = Cursor::new(framed(&blob.encode()));
        assert!(read_response_frame(&mut rd).await.is_err());
        let mut wire = framed(&blob.encode());
        wire.push(7);
        assert!(matches!(
            read_response_frame(&mut Cursor::new(wire)).await.unwrap(),
            Err(WireError::Malformed { .. })
        ));
        // A withdrawn blob must be followed by an error, not by another answer.
        let mut wire = framed(&blob.encode());
        wire.push(BLOB_WITHDRAWN);
        wire.extend(framed(&Response::Stored.encode()));
        assert!(matches!(
            read_response_frame(&mut Cursor::new(wire)).await.unwrap(),
            Err(WireError::Malformed { .. })
        ));
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

    #[tokio::test]
    async fn a_blob_checked_while_sent_is_withdrawn_when_it_does_not_match() {
        // Sizes around the part size: the held-back last part is never empty.
        for len in [
            1,
            HASH_PART - 1,
            HASH_PART,
            HASH_PART + 1,
            4 * HASH_PART,
            300_000,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let id = Hash::of(&data);
            let r = Response::Segment { data: data.clone() };

            // Matching: the same bytes as an unchecked write, and read back whole.
            let mut checked = Cursor::new(Vec::new());
            assert!(
                write_checked_response(&mut checked, &r, Some(id))
                    .await
                    .unwrap()
            );
            let mut plain = Cursor::new(Vec::new());
            write_checked_response(&mut plain, &r, None).await.unwrap();
            assert_eq!(checked.get_ref(), plain.get_ref(), "len {len}");
            let reply = read_response_frame(&mut Cursor::new(checked.into_inner()))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(reply.response, r);
            assert_eq!(reply.blob_hash, Some(id));

            // One flipped byte anywhere: the reader gets the error, never the blob.
            for at in [0, len / 2, len - 1] {
                let mut bad = data.clone();
                bad[at] ^= 1;
                let mut wire = Cursor::new(Vec::new());
                let r = Response::Segment { data: bad };
                assert!(
                    !write_checked_response(&mut wire, &r, Some(id))
                        .await
                        .unwrap()
                );
                let wire = wire.into_inner();
                // The last part never left: where it was, zeros.
                let payload = plain.get_ref().len() - 1 - len;
                let held = (len - 1) / HASH_PART * HASH_PART;
                assert!(wire[payload + held..payload + len].iter().all(|&b| b == 0));
                let reply = read_response_frame(&mut Cursor::new(wire))
                    .await
                    .unwrap()
                    .unwrap();
                match reply.response {
                    Response::Error { code, message } => {
                        assert_eq!(code, ErrorCode::INTERNAL);
                        assert!(message.contains("corrupt"), "{message}");
                    }
                    other => panic!("len {len}, flip at {at}: {other:?}"),
                }
                assert_eq!(reply.blob_hash, None);
            }
        }
    }
}
