//! tonic's prost codec with one change: a message that does not decode is the client's
//! fault, INVALID_ARGUMENT, not INTERNAL (which this server keeps for guest traps).

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The service's codec (named in `host/build.rs`).
pub struct ClientFaultCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for ClientFaultCodec<T, U> {
    fn default() -> Self {
        ClientFaultCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for ClientFaultCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ClientFaultDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ClientFaultDecoder(self.0.decoder())
    }
}

/// Decodes with prost; failures become INVALID_ARGUMENT.
pub struct ClientFaultDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for ClientFaultDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buffer: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0
            .decode(buffer)
            .map_err(|status| Status::invalid_argument(format!("malformed message: {}", status.message())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
