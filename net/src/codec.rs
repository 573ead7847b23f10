//! Framing of data-plane messages on a libp2p stream.
//!
//! A message is a 4-byte big-endian length followed by that many bytes of its encoding
//! ([`medley_core::protocol`]). The length is checked against [`MAX_MESSAGE_SIZE`] before
//! any buffer is allocated, so a peer cannot make us reserve more than that.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use medley_core::protocol::{MAX_MESSAGE_SIZE, Request, Response, WireError};

/// An inbound request as decoded from the wire: either a request, or why it was not one.
/// A malformed request still gets an answer (an error code) rather than a dropped stream.
pub type Inbound = Result<Request, WireError>;

/// The request-response codec for `/medley/data/1`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DataCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Result<Vec<u8>, WireError>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE_SIZE {
        return Ok(Err(WireError::TooLarge {
            size: len,
            max: MAX_MESSAGE_SIZE,
        }));
    }
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

impl request_response::Codec for DataCodec {
    type Protocol = StreamProtocol;
    type Request = Inbound;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Inbound>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(read_frame(io).await?.and_then(|bytes| Request::decode(&bytes)))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io)
            .await?
            .and_then(|bytes| Response::decode(&bytes))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Inbound) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let req = req.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        write_frame(io, &req.encode()).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Response) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res.encode()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use medley_core::ShardId;

    #[tokio::test]
    async fn frames_round_trip_and_bound_lengths() {
        let req = Request::GetShard { id: ShardId::of(b"x") };
        let mut buf = Cursor::new(Vec::new());
        write_frame(&mut buf, &req.encode()).await.unwrap();
        let mut rd = Cursor::new(buf.into_inner());
        let bytes = read_frame(&mut rd).await.unwrap().unwrap();
        assert_eq!(Request::decode(&bytes).unwrap(), req);

        // A frame that claims 1 GiB is refused before anything is allocated or read.
        let mut huge = Cursor::new((1u32 << 30).to_be_bytes().to_vec());
        assert!(matches!(read_frame(&mut huge).await.unwrap(), Err(WireError::TooLarge { .. })));

        // A frame cut short is an I/O error.
        let mut short = Cursor::new(vec![0, 0, 0, 10, 1, 2]);
        assert!(read_frame(&mut short).await.is_err());
    }
}
