//! The codec of server-streaming RPCs (`WatchChanges`): tonic's prost codec, except that each
//! stream's encode buffer starts small. tonic's default reserves 8 KiB per stream for as long as
//! the stream lives, which was half of what an idle watcher cost the server (#27); a message
//! larger than the buffer grows it as it is encoded.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// A stream's first encode buffer, in bytes.
pub const STREAM_BUFFER: usize = 512;

/// tonic's threshold for yielding encoded messages (its default, 32 KiB).
const YIELD_THRESHOLD: usize = 32 * 1024;

#[derive(Debug, Clone)]
pub struct StreamCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StreamCodec<T, U> {
    fn default() -> Self {
        StreamCodec(PhantomData)
    }
}

impl<T, U> Codec for StreamCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(STREAM_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::default().decoder()
    }
}
