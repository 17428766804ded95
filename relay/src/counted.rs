//! Streams and bodies that count the bytes they move into an [`EndpointMeter`] and pace
//! themselves by the account's bandwidth bucket ([`crate::shaping`]): after moving bytes that
//! put the bucket in debt, the next read or write (or body frame) waits until it is paid.
//! Unshaped accounts pay one atomic load per read.

use crate::metering::{Direction, EndpointMeter};
use burrow_common::proxy::{Body, BodyError};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A pending wait for the bucket to refill.
#[derive(Debug, Default)]
struct Pacer(Option<Pin<Box<Sleep>>>);

impl Pacer {
    /// Ready once any wait set by [`Pacer::after`] is over.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(wait) = &mut self.0 {
            ready!(wait.as_mut().poll(cx));
            self.0 = None;
        }
        Poll::Ready(())
    }

    /// Records that `n` bytes moved; the next poll waits if the bucket went into debt.
    fn after(&mut self, meter: &EndpointMeter, n: usize) {
        if let Some(wait) = meter.pace(n) {
            self.0 = Some(Box::pin(tokio::time::sleep(wait)));
        }
    }
}

/// A body that counts its data frames' bytes into `meter` as they pass (see the module docs).
pub struct CountedBody {
    inner: Body,
    meter: EndpointMeter,
    direction: Direction,
    pacer: Pacer,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        ready!(this.pacer.poll_ready(cx));
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.meter.add_bytes(this.direction, data.len() as u64);
            this.pacer.after(&this.meter, data.len());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `body`, counting the bytes of its data frames into `meter` as `direction` while it streams.
pub fn count_body(body: Body, meter: EndpointMeter, direction: Direction) -> Body {
    Body::new(CountedBody {
        inner: body,
        meter,
        direction,
        pacer: Pacer::default(),
    })
}

/// An `AsyncRead`/`AsyncWrite` that counts the bytes read as one direction and the bytes
/// written as the other (raw TCP, upgraded WebSockets).
#[derive(Debug)]
pub struct CountedIo<T> {
    inner: T,
    meter: EndpointMeter,
    reads: Direction,
    read_pacer: Pacer,
    write_pacer: Pacer,
}

impl<T> CountedIo<T> {
    /// Counts what is read from `inner` as `reads`, what is written as the opposite.
    pub fn new(inner: T, meter: EndpointMeter, reads: Direction) -> Self {
        Self {
            inner,
            meter,
            reads,
            read_pacer: Pacer::default(),
            write_pacer: Pacer::default(),
        }
    }

    /// For the visitor's side of a connection (or either half of it): reads are bytes in,
    /// writes are bytes out.
    pub fn visitor(inner: T, meter: EndpointMeter) -> Self {
        Self::new(inner, meter, Direction::In)
    }

    /// The wrapped stream.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.read_pacer.poll_ready(cx));
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = buf.filled().len().saturating_sub(before);
            this.meter.add_bytes(this.reads, n as u64);
            this.read_pacer.after(&this.meter, n);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        ready!(this.write_pacer.poll_ready(cx));
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.meter.add_bytes(this.reads.opposite(), n as u64);
            this.write_pacer.after(&this.meter, n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        ready!(this.write_pacer.poll_ready(cx));
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            this.meter.add_bytes(this.reads.opposite(), n as u64);
            this.write_pacer.after(&this.meter, n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::Meter;
    use http_body_util::BodyExt;
    use std::time::Duration;

    #[tokio::test]
    async fn counted_body_counts_streamed_frames() {
        let meter = Meter::new();
        let m = meter.endpoint("a", "demo", "http");
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BodyError>>(4);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let body = count_body(
            Body::new(http_body_util::StreamBody::new(stream)),
            m.clone(),
            Direction::Out,
        );
        let collector = tokio::spawn(async move { body.collect().await.unwrap() });
        tx.send(Ok(Frame::data(Bytes::from_static(b"hello "))))
            .await
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"world"))))
            .await
            .unwrap();
        // Counted as each frame passes, before the body ends.
        crate::test_support::eventually("11 bytes out counted", || m.unflushed().bytes_out == 11)
            .await;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        tx.send(Ok(Frame::trailers(trailers))).await.unwrap();
        drop(tx);
        let collected = collector.await.unwrap();
        assert!(collected.trailers().is_some(), "trailers pass through");
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"hello world"));
        assert_eq!(m.unflushed().bytes_out, 11, "trailers are not counted");
        assert_eq!(m.unflushed().bytes_in, 0);
    }

    #[tokio::test]
    async fn counted_body_keeps_size_hint_and_end() {
        let meter = Meter::new();
        let m = meter.endpoint("a", "demo", "http");
        let body = count_body(burrow_common::proxy::full("abc"), m.clone(), Direction::In);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(3));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 3);
        assert_eq!(m.unflushed().bytes_in, 3);
    }

    #[tokio::test]
    async fn counted_io_counts_reads_in_and_writes_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let meter = Meter::new();
        let m = meter.endpoint("a", "tcp:20000", "tcp");
        let (visitor_side, mut visitor) = tokio::io::duplex(64);
        let (read, write) = tokio::io::split(visitor_side);
        let mut read = CountedIo::visitor(read, m.clone());
        let mut write = CountedIo::visitor(write, m.clone());
        visitor.write_all(b"ping!").await.unwrap();
        let mut buf = [0u8; 5];
        read.read_exact(&mut buf).await.unwrap();
        write.write_all(b"pong").await.unwrap();
        write.shutdown().await.unwrap();
        let mut back = Vec::new();
        visitor.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong");
        assert_eq!(m.unflushed().bytes_in, 5);
        assert_eq!(m.unflushed().bytes_out, 4);
        // Works as the reader `proxy::from_reader` takes.
        visitor.write_all(b"xyz").await.unwrap();
        drop(visitor);
        let body = burrow_common::proxy::from_reader(read);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "xyz");
        assert_eq!(m.unflushed().bytes_in, 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shaped_account_waits_for_its_bucket() {
        use tokio::io::AsyncReadExt;
        let shapers = std::sync::Arc::new(crate::shaping::Shapers::default());
        let meter = Meter::with_shapers(shapers.clone());
        let m = meter.endpoint("slow", "demo", "tcp");
        // 64 KiB burst, then 64 KiB/s: 256 KiB take about 3 s more (paused clock).
        shapers.set_rate("slow", Some(64 * 1024));
        let data = vec![7u8; 256 * 1024];
        let mut r = CountedIo::visitor(&data[..], m.clone());
        let started = tokio::time::Instant::now();
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).await.unwrap();
        let took = started.elapsed();
        assert_eq!(sink.len(), data.len());
        assert!(took >= Duration::from_millis(2900), "{took:?}");
        assert!(took <= Duration::from_millis(4100), "{took:?}");
        // Lifting the limit (a plan change) lets the same handle run unpaced.
        shapers.set_rate("slow", None);
        let started = tokio::time::Instant::now();
        let mut r = CountedIo::visitor(&data[..], m);
        r.read_to_end(&mut Vec::new()).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(10));
    }
}
