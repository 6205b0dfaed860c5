//! DoGet answers whose Arrow buffers are copied once, straight into gRPC's frame.
//!
//! arrow-flight's encoder gathers each batch's buffers into one `data_body` (a copy), which
//! prost then copies into tonic's frame buffer (a second copy), before the kernel's. Here
//! arrow's IPC stream encoder hands out the batch's own buffers, and [`FlightMessageCodec`]
//! writes the `FlightData` protobuf around them into the frame: a 1M-row table's 132 MB is
//! copied once in user space instead of twice. What clients receive is the same `FlightData`
//! messages (a flatbuffer header and a body per IPC message).
//!
//! [`QueryServer`] is the Flight service with its DoGet answered through this codec; every
//! other method goes to arrow-flight's generated server unchanged.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::{IpcWriteOptions, StreamEncoder};
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::{FlightData, Ticket};
use bytes::{Buf, BufMut, Bytes};
use futures::{Stream, StreamExt};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};

use crate::error::QueryError;
use crate::service::QueryService;

/// The largest message body sent: a batch larger than this is sent as slices of its rows
/// (arrow-flight's encoder sends at most this much too; tonic clients refuse more than 4 MB).
pub const MAX_MESSAGE_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The largest request a client may send (a command may list many jobs).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// The gRPC path of DoGet.
const DO_GET_PATH: &str = "/arrow.flight.protocol.FlightService/DoGet";

/// `FlightData.data_header`: field 2, length-delimited.
const DATA_HEADER_TAG: u8 = 2 << 3 | 2;
/// `FlightData.data_body`: field 1000, length-delimited, as its two-byte varint.
const DATA_BODY_TAG: [u8; 2] = [0xC2, 0x3E];

/// One message of a DoGet answer.
#[derive(Debug)]
pub enum FlightMessage {
    /// An Arrow IPC message: its flatbuffer header, and its body as pieces (the batch's own
    /// buffers and their padding), `body_len` bytes in all.
    Ipc {
        /// The IPC message's flatbuffer (with its padding), the `data_header`.
        header: Buffer,
        /// The body's pieces in order.
        body: Vec<Buffer>,
        /// The body's length: the pieces' lengths summed.
        body_len: usize,
    },
    /// A message arrow-flight's encoder built (answers other than a table's batches).
    Data(FlightData),
}

impl FlightMessage {
    /// The message as arrow-flight's type, its body gathered into one buffer.
    pub fn into_flight_data(self) -> FlightData {
        match self {
            Self::Data(data) => data,
            Self::Ipc { header, body, body_len } => FlightData {
                data_header: Bytes::copy_from_slice(header.as_slice()),
                data_body: Bytes::from(gathered(&body, body_len)),
                ..Default::default()
            },
        }
    }
}

/// `pieces`, `len` bytes in all, copied into one buffer.
fn gathered(pieces: &[Buffer], len: usize) -> Vec<u8> {
    let mut joined = Vec::with_capacity(len);
    for piece in pieces {
        joined.extend_from_slice(piece.as_slice());
    }
    joined
}

/// The IPC messages of `batches` (with `schema`, the schema message first), a batch larger than
/// [`MAX_MESSAGE_BODY_BYTES`] as slices of its rows. A dictionary column's values are sent
/// before the first batch and again whenever a batch has other values. Fails at once for a
/// schema arrow's IPC encoder does not take.
pub fn ipc_messages<S>(schema: SchemaRef, batches: S) -> Result<impl Stream<Item = Result<FlightMessage, Status>> + Send + 'static, QueryError>
where
    S: Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
{
    struct State<S> {
        batches: S,
        encoder: Option<StreamEncoder>,
        pending: VecDeque<FlightMessage>,
        sent_any: bool,
    }
    let encoder = StreamEncoder::try_new_with_options(&schema, IpcWriteOptions::default())?;
    let state = State {
        batches: batches.boxed(),
        encoder: Some(encoder),
        pending: VecDeque::new(),
        sent_any: false,
    };
    Ok(futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(message) = state.pending.pop_front() {
                return Some((Ok(message), state));
            }
            let encoder = state.encoder.as_mut()?;
            let encoded = match state.batches.next().await {
                Some(Ok(batch)) => {
                    let mut pieces = Vec::new();
                    let mut failed = None;
                    for slice in slices_for_grpc(&batch) {
                        match encoder.encode(&slice) {
                            Ok(more) => pieces.extend(more),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    match failed {
                        None => split_messages(pieces),
                        Some(e) => Err(QueryError::from(e).into()),
                    }
                }
                Some(Err(status)) => Err(status),
                None => {
                    // The schema still goes out before the stream ends, if no batch carried it.
                    let encoder = state.encoder.take()?;
                    if state.sent_any {
                        return None;
                    }
                    encoder
                        .finish()
                        .map_err(|e| QueryError::from(e).into())
                        .and_then(split_messages)
                }
            };
            match encoded {
                Ok(messages) => {
                    state.sent_any |= !messages.is_empty();
                    state.pending.extend(messages);
                }
                Err(status) => {
                    state.encoder = None;
                    return Some((Err(status), state));
                }
            }
        }
    }))
}

/// `batch` as row slices of at most about [`MAX_MESSAGE_BODY_BYTES`] each (zero-copy); a batch
/// without rows as itself, whatever its buffers hold.
fn slices_for_grpc(batch: &RecordBatch) -> Vec<RecordBatch> {
    let bytes: usize = batch.columns().iter().map(|column| column.get_buffer_memory_size()).sum();
    let pieces = bytes.div_ceil(MAX_MESSAGE_BODY_BYTES).max(1);
    let rows = batch.num_rows();
    let per_piece = rows.div_ceil(pieces).max(1);
    if pieces == 1 || rows == 0 {
        return vec![batch.clone()];
    }
    (0..rows).step_by(per_piece).map(|start| batch.slice(start, per_piece.min(rows - start))).collect()
}

/// The IPC stream bytes `pieces` (as arrow's stream encoder wrote them) as messages: each an
/// 8-byte prefix (continuation marker, header length), the header, then the body whose length
/// the header gives. An end-of-stream marker ends them.
fn split_messages(pieces: Vec<Buffer>) -> Result<Vec<FlightMessage>, Status> {
    let mut cursor = Pieces(pieces.into());
    let mut messages = Vec::new();
    while !cursor.exhausted() {
        let prefix = cursor.take_contiguous(8)?;
        let (marker, length) = prefix.as_slice().split_at(4);
        if marker != [0xFF; 4] {
            return Err(Status::internal("IPC encoder wrote a message without its continuation marker"));
        }
        let header_len = i32::from_le_bytes(length.try_into().expect("four bytes"));
        let header_len = usize::try_from(header_len).map_err(|_| Status::internal("IPC encoder wrote a negative header length"))?;
        if header_len == 0 {
            break;
        }
        let header = cursor.take_contiguous(header_len)?;
        let message = arrow::ipc::root_as_message(header.as_slice()).map_err(|e| Status::internal(format!("IPC encoder wrote an unreadable header: {e}")))?;
        let body_len = usize::try_from(message.bodyLength()).map_err(|_| Status::internal("IPC encoder wrote a negative body length"))?;
        let body = cursor.take(body_len)?;
        messages.push(FlightMessage::Ipc { header, body, body_len });
    }
    Ok(messages)
}

/// A cursor over buffers read as one byte stream.
struct Pieces(VecDeque<Buffer>);

impl Pieces {
    /// Whether no byte is left (the encoder may leave empty buffers).
    fn exhausted(&self) -> bool {
        self.0.iter().all(Buffer::is_empty)
    }

    /// The next `len` bytes as pieces, splitting a buffer where they end (zero-copy).
    fn take(&mut self, mut len: usize) -> Result<Vec<Buffer>, Status> {
        let mut taken = Vec::new();
        while len > 0 {
            let piece = self.0.pop_front().ok_or_else(|| Status::internal("IPC encoder wrote a message shorter than its header says"))?;
            if piece.len() > len {
                self.0.push_front(piece.slice(len));
                taken.push(piece.slice_with_length(0, len));
                len = 0;
            } else {
                len -= piece.len();
                taken.push(piece);
            }
        }
        Ok(taken)
    }

    /// The next `len` bytes as one buffer (copied only when they span pieces).
    fn take_contiguous(&mut self, len: usize) -> Result<Buffer, Status> {
        let mut taken = self.take(len)?;
        if taken.len() == 1 {
            return Ok(taken.pop().expect("one piece"));
        }
        Ok(Buffer::from(gathered(&taken, len)))
    }
}

/// Encodes [`FlightMessage`]s as `FlightData`, writing IPC bodies' pieces straight into the
/// frame; decodes the `Ticket` a DoGet sends.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlightMessageCodec;

impl Codec for FlightMessageCodec {
    type Encode = FlightMessage;
    type Decode = Ticket;
    type Encoder = FlightMessageEncoder;
    type Decoder = TicketDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        FlightMessageEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        TicketDecoder
    }
}

/// The encoding half of [`FlightMessageCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FlightMessageEncoder;

impl Encoder for FlightMessageEncoder {
    type Item = FlightMessage;
    type Error = Status;

    fn encode(&mut self, item: FlightMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            FlightMessage::Data(data) => data.encode(dst).map_err(|e| Status::internal(format!("encoding FlightData: {e}"))),
            FlightMessage::Ipc { header, body, body_len } => {
                dst.reserve(encoded_len(&header, body_len));
                write_ipc(&header, &body, body_len, dst);
                Ok(())
            }
        }
    }
}

/// The length of the `FlightData` holding an IPC message of this header and body length.
fn encoded_len(header: &Buffer, body_len: usize) -> usize {
    let header_len = header.len();
    let mut len = 1 + prost::encoding::encoded_len_varint(header_len as u64) + header_len;
    if body_len > 0 {
        len += DATA_BODY_TAG.len() + prost::encoding::encoded_len_varint(body_len as u64) + body_len;
    }
    len
}

/// Writes the `FlightData` of an IPC message to `dst` as prost would (fields in tag order, an
/// empty body left out), each body piece copied once.
fn write_ipc(header: &Buffer, body: &[Buffer], body_len: usize, dst: &mut impl BufMut) {
    dst.put_u8(DATA_HEADER_TAG);
    prost::encoding::encode_varint(header.len() as u64, dst);
    dst.put_slice(header.as_slice());
    if body_len > 0 {
        dst.put_slice(&DATA_BODY_TAG);
        prost::encoding::encode_varint(body_len as u64, dst);
        for piece in body {
            dst.put_slice(piece.as_slice());
        }
    }
}

/// The decoding half of [`FlightMessageCodec`]: a DoGet's `Ticket`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TicketDecoder;

impl Decoder for TicketDecoder {
    type Item = Ticket;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Ticket>, Status> {
        let ticket = Ticket::decode(src.copy_to_bytes(src.remaining())).map_err(|e| Status::invalid_argument(format!("ticket: not a Ticket message: {e}")))?;
        Ok(Some(ticket))
    }
}

/// The query service's gRPC server: arrow-flight's generated Flight server, with DoGet answered
/// through [`FlightMessageCodec`].
#[derive(Debug, Clone)]
pub struct QueryServer {
    flight: FlightServiceServer<QueryService>,
    service: Arc<QueryService>,
}

impl QueryServer {
    /// The server for `service`.
    pub fn new(service: QueryService) -> Self {
        let service = Arc::new(service);
        Self {
            flight: FlightServiceServer::from_arc(Arc::clone(&service)).max_decoding_message_size(MAX_REQUEST_BYTES),
            service,
        }
    }
}

impl tonic::server::NamedService for QueryServer {
    const NAME: &'static str = crate::service::SERVICE_NAME;
}

/// DoGet, answered as [`FlightMessage`]s.
struct DoGet(Arc<QueryService>);

impl tonic::server::ServerStreamingService<Ticket> for DoGet {
    type Response = FlightMessage;
    type ResponseStream = std::pin::Pin<Box<dyn Stream<Item = Result<FlightMessage, Status>> + Send + 'static>>;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: tonic::Request<Ticket>) -> Self::Future {
        let service = Arc::clone(&self.0);
        Box::pin(async move { service.do_get_messages(request).await })
    }
}

impl<B> Service<http::Request<B>> for QueryServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != DO_GET_PATH {
            return self.flight.call(request);
        }
        let service = Arc::clone(&self.service);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(FlightMessageCodec).apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
            Ok(grpc.server_streaming(DoGet(service), request).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, DictionaryArray, Float64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use futures::{StreamExt, TryStreamExt};
    use tonic::Status;

    use super::{FlightMessage, MAX_MESSAGE_BODY_BYTES, ipc_messages};

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("target", DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)), false),
            Field::new("param_id", DataType::Utf8, false),
            Field::new("loss", DataType::Float64, true),
        ]))
    }

    /// `rows` rows whose targets are drawn from `targets`, with 64-character ids.
    fn batch(rows: usize, targets: &[&str], first: usize) -> RecordBatch {
        let keys: Vec<&str> = (0..rows).map(|row| targets[row % targets.len()]).collect();
        let target: DictionaryArray<Int32Type> = keys.into_iter().collect();
        let ids = StringArray::from_iter_values((first..first + rows).map(|row| format!("{row:064x}")));
        let loss = Float64Array::from_iter((first..first + rows).map(|row| (row % 7 != 0).then_some(row as f64 / 3.0)));
        RecordBatch::try_new(schema(), vec![Arc::new(target) as ArrayRef, Arc::new(ids), Arc::new(loss)]).unwrap()
    }

    /// The batches a Flight client decodes from `messages`.
    async fn decoded(messages: Vec<FlightMessage>) -> Result<(Arc<Schema>, Vec<RecordBatch>), arrow_flight::error::FlightError> {
        let data = futures::stream::iter(messages.into_iter().map(|message| Ok(message.into_flight_data())));
        let mut stream = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(data);
        let mut batches = Vec::new();
        while let Some(batch) = stream.try_next().await? {
            batches.push(batch);
        }
        Ok((stream.schema().cloned().expect("a schema message"), batches))
    }

    /// `batches` in one batch, dictionaries expanded (batches may hold different dictionaries).
    fn flat(batches: &[RecordBatch]) -> RecordBatch {
        let plain = Arc::new(Schema::new(vec![
            Field::new("target", DataType::Utf8, false),
            Field::new("param_id", DataType::Utf8, false),
            Field::new("loss", DataType::Float64, true),
        ]));
        let expanded: Vec<RecordBatch> = batches
            .iter()
            .map(|batch| {
                let columns = batch.columns().iter().zip(plain.fields()).map(|(column, field)| arrow::compute::cast(column, field.data_type()).unwrap()).collect();
                RecordBatch::try_new(Arc::clone(&plain), columns).unwrap()
            })
            .collect();
        arrow::compute::concat_batches(&plain, &expanded).unwrap()
    }

    #[tokio::test]
    async fn messages_decode_to_the_batches_sent_large_ones_in_slices_each_with_its_dictionary() {
        // 40,000 rows of 64-byte ids is about 3 MB: more than one message. The second batch has
        // other dictionary values, which must replace the first's.
        let sent = vec![batch(40_000, &["targets.a", "targets.b"], 0), batch(1_000, &["targets.c"], 40_000), batch(0, &["targets.a"], 41_000)];
        let messages: Vec<FlightMessage> = ipc_messages(schema(), futures::stream::iter(sent.clone().into_iter().map(Ok))).unwrap().try_collect().await.unwrap();
        let bodies: Vec<usize> = messages
            .iter()
            .map(|message| match message {
                FlightMessage::Ipc { body, body_len, .. } => {
                    assert_eq!(body.iter().map(|piece| piece.len()).sum::<usize>(), *body_len);
                    *body_len
                }
                FlightMessage::Data(_) => panic!("a table's messages are IPC messages"),
            })
            .collect();
        assert_eq!(bodies[0], 0, "the schema comes first, without a body");
        assert!(bodies.iter().filter(|&&len| len > 1_000_000).count() >= 2, "the large batch is sliced: {bodies:?}");
        assert!(bodies.iter().all(|&len| len <= MAX_MESSAGE_BODY_BYTES + 64 * 1024), "{bodies:?}");
        let (schema_received, received) = decoded(messages).await.unwrap();
        assert_eq!(schema_received, schema());
        assert_eq!(flat(&received), flat(&sent));
        assert_eq!(received.iter().map(RecordBatch::num_rows).sum::<usize>(), 41_000);
    }

    #[tokio::test]
    async fn a_first_batch_without_rows_still_carries_the_schema_however_large_its_buffers() {
        // No rows, but a slice of a batch whose buffers hold about 3 MB.
        let empty = batch(40_000, &["targets.a"], 0).slice(0, 0);
        let messages: Vec<FlightMessage> = ipc_messages(schema(), futures::stream::iter([Ok(empty)])).unwrap().try_collect().await.unwrap();
        let (schema_received, received) = decoded(messages).await.unwrap();
        assert_eq!(schema_received, schema());
        assert_eq!(received.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    }

    #[tokio::test]
    async fn the_codec_writes_the_bytes_prost_writes_for_the_same_flight_data() {
        let sent = vec![batch(40_000, &["targets.a", "targets.b"], 0), batch(3, &["targets.c"], 40_000)];
        let messages: Vec<FlightMessage> = ipc_messages(schema(), futures::stream::iter(sent.into_iter().map(Ok))).unwrap().try_collect().await.unwrap();
        assert!(messages.len() > 3);
        for message in messages {
            let FlightMessage::Ipc { header, body, body_len } = &message else { panic!("a table's messages are IPC messages") };
            let mut ours = Vec::new();
            super::write_ipc(header, body, *body_len, &mut ours);
            assert_eq!(ours.len(), super::encoded_len(header, *body_len));
            let theirs = prost::Message::encode_to_vec(&message.into_flight_data());
            assert_eq!(ours, theirs);
        }
    }

    #[tokio::test]
    async fn a_table_without_batches_is_its_schema_alone() {
        let messages: Vec<FlightMessage> = ipc_messages(schema(), futures::stream::empty()).unwrap().try_collect().await.unwrap();
        assert_eq!(messages.len(), 1);
        let (schema_received, received) = decoded(messages).await.unwrap();
        assert_eq!(schema_received, schema());
        assert!(received.is_empty());
    }

    #[tokio::test]
    async fn a_failed_batch_ends_the_messages_with_its_status() {
        let batches = futures::stream::iter(vec![Ok(batch(10, &["targets.a"], 0)), Err(Status::data_loss("the table changed")), Ok(batch(10, &["targets.a"], 10))]);
        let results: Vec<Result<FlightMessage, Status>> = ipc_messages(schema(), batches).unwrap().collect().await;
        let failed = results.iter().position(Result::is_err).expect("an error");
        assert_eq!(failed, results.len() - 1, "nothing after the error");
        assert_eq!(results[failed].as_ref().unwrap_err().code(), tonic::Code::DataLoss);
        let before: Vec<FlightMessage> = results.into_iter().take(failed).map(Result::unwrap).collect();
        let (_, received) = decoded(before).await.unwrap();
        assert_eq!(flat(&received), flat(&[batch(10, &["targets.a"], 0)]));
    }
}
