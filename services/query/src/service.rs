//! `arrow.flight.protocol.FlightService`: the JSON commands, descriptor paths and Flight SQL
//! (statements, prepared statements, SqlInfo, and the catalog metadata SQL tools browse with:
//! catalogs, schemas, tables with their schemas, table types) of `FLIGHT_COMMANDS.md`, on one
//! Flight service.
//! Tickets are commands (JSON), so any replica answers any ticket. The service is read-only:
//! DoPut only binds parameters to a prepared statement (answering with a handle that carries
//! them, so that too is stateless), and DoExchange is refused.

use std::pin::Pin;

use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{self, Any, ProstMessageExt, SqlInfo};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::command::{Command, LossesQuery};
use crate::engine::{Engine, served_schema};
use crate::error::QueryError;
use crate::flight_body::{FlightMessage, QueryServer, ipc_messages};

/// The gRPC service name, for health and reflection.
pub const SERVICE_NAME: &str = "arrow.flight.protocol.FlightService";

/// The Flight SQL action that prepares a statement.
const CREATE_PREPARED_STATEMENT: &str = "CreatePreparedStatement";
/// The Flight SQL action that closes a prepared statement.
const CLOSE_PREPARED_STATEMENT: &str = "ClosePreparedStatement";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What a descriptor or ticket asks for.
#[derive(Debug)]
enum Asked {
    /// A command of ours (JSON, a path, or SQL).
    Query(Command),
    /// Flight SQL server metadata.
    SqlInfo(sql::CommandGetSqlInfo),
    /// Flight SQL catalog metadata.
    Metadata(Metadata),
    /// A prepared statement with parameters bound (by DoPut); `command` is the Flight SQL
    /// message it came in, which is its ticket too.
    Bound {
        query: String,
        params: Vec<datafusion::common::ScalarValue>,
        command: Vec<u8>,
    },
}

/// Marks a prepared-statement handle that carries bound parameters (no SQL starts with NUL).
const BOUND_HANDLE: &[u8] = b"\0mops-bound\0";
/// The most parameter rows one DoPut may bind (a query runs with one row).
const MAX_PARAMETER_ROWS: usize = 1;

/// A prepared statement's handle: the SQL itself, or, once parameters are bound, [`BOUND_HANDLE`],
/// the SQL's length (u32, little-endian), the SQL, and the one-row parameter batch as an Arrow IPC
/// stream. Handles are stateless: any replica runs any handle.
fn bound_handle(query: &str, params: &arrow::array::RecordBatch) -> Result<Vec<u8>, QueryError> {
    let length = u32::try_from(query.len()).map_err(|_| QueryError::invalid("query", "longer than 4 GiB"))?;
    let mut handle = BOUND_HANDLE.to_vec();
    handle.extend_from_slice(&length.to_le_bytes());
    handle.extend_from_slice(query.as_bytes());
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut handle, &params.schema())?;
    writer.write(params)?;
    writer.finish()?;
    drop(writer);
    Ok(handle)
}

/// The SQL of a handle and its bound parameters (none for a handle that is the SQL itself).
fn read_handle(handle: &[u8], field: &str) -> Result<(String, Option<Vec<datafusion::common::ScalarValue>>), QueryError> {
    let Some(rest) = handle.strip_prefix(BOUND_HANDLE) else {
        return Ok((utf8(handle, field)?, None));
    };
    let malformed = || QueryError::invalid(field, "a malformed prepared statement handle");
    let (length, rest) = rest.split_first_chunk::<4>().ok_or_else(malformed)?;
    let length = usize::try_from(u32::from_le_bytes(*length)).map_err(|_| malformed())?;
    let (query, ipc) = (rest.get(..length).ok_or_else(malformed)?, rest.get(length..).ok_or_else(malformed)?);
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).map_err(|_| malformed())?;
    let mut params = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|_| malformed())?;
        if batch.num_rows() != 1 {
            return Err(malformed());
        }
        for column in batch.columns() {
            params.push(datafusion::common::ScalarValue::try_from_array(column, 0).map_err(|_| malformed())?);
        }
    }
    Ok((utf8(query, field)?, Some(params)))
}

/// The catalog metadata Flight SQL clients ask for (ADBC's `get_objects`, `get_table_schema`,
/// `get_table_types`).
#[derive(Debug, Clone)]
enum Metadata {
    Catalogs(sql::CommandGetCatalogs),
    Schemas(sql::CommandGetDbSchemas),
    Tables(sql::CommandGetTables),
    TableTypes(sql::CommandGetTableTypes),
}

/// The catalog SQL queries run in (DataFusion's default): `datafusion.public.losses` is `losses`.
const SQL_CATALOG: &str = "datafusion";
/// The schema SQL queries run in.
const SQL_SCHEMA: &str = "public";
/// The tables SQL queries see.
const SQL_TABLES: [&str; 2] = ["losses", "jobs"];

impl Metadata {
    /// The command, packed as it travels in a descriptor or a ticket.
    fn encode(&self) -> Vec<u8> {
        match self {
            Self::Catalogs(command) => command.as_any().encode_to_vec(),
            Self::Schemas(command) => command.as_any().encode_to_vec(),
            Self::Tables(command) => command.as_any().encode_to_vec(),
            Self::TableTypes(command) => command.as_any().encode_to_vec(),
        }
    }

    /// The schema of the answer.
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        match self {
            Self::Catalogs(command) => (*command).into_builder().schema(),
            Self::Schemas(command) => command.clone().into_builder().schema(),
            Self::Tables(command) => command.clone().into_builder().schema(),
            Self::TableTypes(command) => (*command).into_builder().schema(),
        }
    }

    /// The answer: one catalog and schema, the tables `losses` and `jobs` (with their schemas
    /// when asked), filtered as the command says.
    async fn answer(&self, engine: &Engine) -> Result<arrow::array::RecordBatch, QueryError> {
        let built = match self {
            Self::Catalogs(command) => {
                let mut builder = (*command).into_builder();
                builder.append(SQL_CATALOG);
                builder.build()
            }
            Self::Schemas(command) => {
                let mut builder = command.clone().into_builder();
                builder.append(SQL_CATALOG, SQL_SCHEMA);
                builder.build()
            }
            Self::Tables(command) => {
                let mut builder = command.clone().into_builder();
                for table in SQL_TABLES {
                    let schema = engine.schema(&Command::Sql { query: format!("SELECT * FROM {table}") }).await?;
                    builder.append(SQL_CATALOG, SQL_SCHEMA, table, "TABLE", &schema)?;
                }
                builder.build()
            }
            Self::TableTypes(command) => {
                let mut builder = (*command).into_builder();
                builder.append("TABLE");
                builder.build()
            }
        };
        Ok(built?)
    }
}

/// The query service.
#[derive(Clone)]
pub struct QueryService {
    engine: Engine,
    sql_info: std::sync::Arc<SqlInfoData>,
}

impl std::fmt::Debug for QueryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryService").field("engine", &self.engine).finish_non_exhaustive()
    }
}

impl QueryService {
    /// A service answering through `engine`.
    pub fn new(engine: Engine) -> Result<Self, QueryError> {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "mops query (DataFusion)");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0_i32);
        Ok(Self {
            engine,
            sql_info: std::sync::Arc::new(info.build()?),
        })
    }

    /// The tonic server for this service, accepting large messages (a command may list many
    /// jobs), sending a table's batches with their buffers copied once
    /// ([`crate::flight_body`]).
    pub fn into_server(self) -> QueryServer {
        QueryServer::new(self)
    }

    /// DoGet's answer as [`FlightMessage`]s: what [`QueryServer`] sends, and, gathered into
    /// `FlightData`, what the [`FlightService`] implementation answers.
    #[tracing::instrument(name = "do_get", skip_all)]
    pub async fn do_get_messages(&self, request: Request<Ticket>) -> Result<Response<BoxStream<FlightMessage>>, Status> {
        let ticket = request.into_inner();
        let asked = Self::decode_command(&ticket.ticket, "ticket")?;
        tracing::debug!(?asked, "do_get");
        Ok(Response::new(self.stream(asked).await?))
    }

    fn decode_descriptor(descriptor: &FlightDescriptor) -> Result<Asked, QueryError> {
        match descriptor.r#type() {
            DescriptorType::Path => match descriptor.path.as_slice() {
                [kind, job] if kind == "losses" => Ok(Asked::Query(Command::Losses(LossesQuery::whole_table(job)))),
                [kind, job] if kind == "replicates" => Ok(Asked::Query(Command::Replicates { job_id: job.clone() })),
                [kind] if kind == "jobs" => Ok(Asked::Query(Command::Jobs)),
                other => Err(QueryError::invalid(
                    "descriptor.path",
                    format!("expected [\"losses\", job_id], [\"replicates\", job_id] or [\"jobs\"], got {other:?}"),
                )),
            },
            DescriptorType::Cmd => Self::decode_command(&descriptor.cmd, "descriptor.cmd"),
            DescriptorType::Unknown => Err(QueryError::invalid("descriptor.type", "expected PATH or CMD")),
        }
    }

    /// A JSON command, or a Flight SQL message in an `Any`.
    fn decode_command(bytes: &[u8], field: &str) -> Result<Asked, QueryError> {
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            return Command::parse(bytes).map(Asked::Query);
        }
        let any = Any::decode(bytes).map_err(|_| QueryError::invalid(field, "neither a JSON command nor a Flight SQL command"))?;
        match sql::Command::try_from(any).map_err(|e| QueryError::invalid(field, e.to_string()))? {
            sql::Command::CommandStatementQuery(statement) => Ok(Asked::Query(Command::Sql { query: statement.query })),
            sql::Command::TicketStatementQuery(ticket) => Ok(Asked::Query(Command::Sql {
                query: utf8(&ticket.statement_handle, field)?,
            })),
            sql::Command::CommandPreparedStatementQuery(prepared) => match read_handle(&prepared.prepared_statement_handle, field)? {
                (query, None) => Ok(Asked::Query(Command::Sql { query })),
                (query, Some(params)) => Ok(Asked::Bound {
                    query,
                    params,
                    command: prepared.as_any().encode_to_vec(),
                }),
            },
            sql::Command::CommandGetSqlInfo(info) => Ok(Asked::SqlInfo(info)),
            sql::Command::CommandGetCatalogs(command) => Ok(Asked::Metadata(Metadata::Catalogs(command))),
            sql::Command::CommandGetDbSchemas(command) => Ok(Asked::Metadata(Metadata::Schemas(command))),
            sql::Command::CommandGetTables(command) => Ok(Asked::Metadata(Metadata::Tables(command))),
            sql::Command::CommandGetTableTypes(command) => Ok(Asked::Metadata(Metadata::TableTypes(command))),
            other => Err(QueryError::invalid(
                field,
                format!(
                    "{} is not supported: this service answers SQL queries, prepared statements (without parameters), SqlInfo, catalogs, schemas, tables and table types",
                    other.type_url()
                ),
            )),
        }
    }

    async fn flight_info(&self, asked: Asked, descriptor: FlightDescriptor) -> Result<FlightInfo, QueryError> {
        match asked {
            Asked::Query(command) => {
                let schema = self.engine.schema(&command).await?;
                let (records, bytes) = self.engine.size_hint(&command).await?;
                Ok(FlightInfo::new()
                    .try_with_schema(&schema)?
                    .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(command.to_json())))
                    .with_descriptor(descriptor)
                    .with_total_records(records)
                    .with_total_bytes(bytes)
                    .with_ordered(true))
            }
            Asked::SqlInfo(info) => Ok(FlightInfo::new()
                .try_with_schema(&self.sql_info.schema())?
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(info.as_any().encode_to_vec())))
                .with_descriptor(descriptor)),
            Asked::Metadata(metadata) => Ok(FlightInfo::new()
                .try_with_schema(&metadata.schema())?
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(metadata.encode())))
                .with_descriptor(descriptor)),
            Asked::Bound { query, params, command } => Ok(FlightInfo::new()
                .try_with_schema(self.engine.bound_sql_schema(&query, params).await?.as_ref())?
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(command)))
                .with_descriptor(descriptor)),
        }
    }

    async fn stream(&self, asked: Asked) -> Result<BoxStream<FlightMessage>, QueryError> {
        let batches: Pin<Box<dyn Stream<Item = Result<arrow::array::RecordBatch, FlightError>> + Send>> = match asked {
            Asked::Query(command) => {
                let stream = self.engine.execute(&command).await?;
                let schema = stream.schema();
                // A job's whole table has dictionary columns (`served_schema`): sent as
                // dictionaries, each batch's values when they differ from the last sent, not
                // expanded to strings.
                return Ok(Box::pin(ipc_messages(schema, stream.map_err(|e| Status::from(QueryError::from(e))))?));
            }
            Asked::SqlInfo(info) => {
                let batch = self.sql_info.record_batch(info.info)?;
                Box::pin(futures::stream::once(async { Ok(batch) }))
            }
            Asked::Metadata(metadata) => {
                let batch = metadata.answer(&self.engine).await?;
                Box::pin(futures::stream::once(async { Ok(batch) }))
            }
            Asked::Bound { query, params, .. } => {
                let stream = self.engine.execute_bound_sql(&query, params).await?;
                let schema = stream.schema();
                let encoded = FlightDataEncoderBuilder::new()
                    .with_schema(schema)
                    .build(stream.map_err(|e| FlightError::Tonic(Box::new(Status::from(QueryError::from(e))))));
                return Ok(Box::pin(encoded.map_err(Status::from).map_ok(FlightMessage::Data)));
            }
        };
        Ok(Box::pin(FlightDataEncoderBuilder::new().build(batches).map_err(Status::from).map_ok(FlightMessage::Data)))
    }
}

fn utf8(bytes: &[u8], field: &str) -> Result<String, QueryError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| QueryError::invalid(field, "not UTF-8"))
}

fn schema_ipc(schema: &arrow::datatypes::Schema) -> Result<bytes::Bytes, QueryError> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into()?;
    Ok(bytes)
}

#[tonic::async_trait]
impl FlightService for QueryService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    /// Authentication is the bearer token of the transport; a handshake only answers.
    async fn handshake(&self, _request: Request<Streaming<HandshakeRequest>>) -> Result<Response<Self::HandshakeStream>, Status> {
        let response = HandshakeResponse::default();
        Ok(Response::new(Box::pin(futures::stream::once(async { Ok(response) }))))
    }

    #[tracing::instrument(skip_all)]
    async fn list_flights(&self, _request: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        // Built one at a time as the client takes them: the stream holds the jobs' entries, not
        // tens of thousands of FlightInfos at once. Jobs share a few schemas: each is encoded
        // once, keyed by the shared schema's address (the map holds the schema, so no other
        // schema takes its address while the listing runs), as a whole table is served.
        let mut encoded: std::collections::HashMap<usize, (arrow::datatypes::SchemaRef, FlightInfo)> = std::collections::HashMap::new();
        let infos = self.engine.catalog().jobs().into_iter().map(move |job| {
            let with_schema = match encoded.entry(std::sync::Arc::as_ptr(&job.schema) as usize) {
                std::collections::hash_map::Entry::Occupied(known) => known.get().1.clone(),
                std::collections::hash_map::Entry::Vacant(new) => {
                    let info = FlightInfo::new().try_with_schema(&served_schema(&job.schema)).map_err(|e| Status::from(QueryError::from(e)))?;
                    new.insert((std::sync::Arc::clone(&job.schema), info)).1.clone()
                }
            };
            let command = Command::Losses(LossesQuery::whole_table(&job.job_id));
            Ok(with_schema
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(command.to_json())))
                .with_descriptor(FlightDescriptor::new_path(vec!["losses".into(), job.job_id.clone()]))
                .with_total_records(job.counts[0] as i64)
                .with_total_bytes(job.table_bytes as i64)
                .with_ordered(true))
        });
        Ok(Response::new(Box::pin(futures::stream::iter(infos))))
    }

    #[tracing::instrument(skip_all)]
    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.into_inner();
        let asked = Self::decode_descriptor(&descriptor)?;
        tracing::debug!(?asked, "get_flight_info");
        Ok(Response::new(self.flight_info(asked, descriptor).await?))
    }

    async fn poll_flight_info(&self, _request: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("PollFlightInfo: queries are not long-running here; use GetFlightInfo"))
    }

    #[tracing::instrument(skip_all)]
    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        let descriptor = request.into_inner();
        let schema = match Self::decode_descriptor(&descriptor)? {
            Asked::Query(command) => self.engine.schema(&command).await?,
            Asked::SqlInfo(_) => self.sql_info.schema(),
            Asked::Metadata(metadata) => metadata.schema(),
            Asked::Bound { query, params, .. } => self.engine.bound_sql_schema(&query, params).await?,
        };
        let result = SchemaAsIpc::new(&schema, &IpcWriteOptions::default()).try_into().map_err(|e| Status::from(QueryError::from(e)))?;
        Ok(Response::new(result))
    }

    /// The messages of [`QueryService::do_get_messages`], each body gathered into one buffer
    /// ([`QueryServer`] sends them without this copy).
    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let messages = self.do_get_messages(request).await?.into_inner();
        Ok(Response::new(Box::pin(messages.map_ok(FlightMessage::into_flight_data))))
    }

    /// Binds parameters to a prepared statement (Flight SQL's stateless form: the answer is a new
    /// handle carrying them). Anything else is refused: the service is read-only.
    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("DoPut: an empty stream"))?;
        let read_only = || Status::unimplemented("DoPut: the query service is read-only (tables are written by the indexer); it only binds parameters to prepared statements");
        let descriptor = first.flight_descriptor.clone().ok_or_else(read_only)?;
        if descriptor.r#type() != DescriptorType::Cmd {
            return Err(read_only());
        }
        let any = Any::decode(descriptor.cmd.as_ref()).map_err(|_| read_only())?;
        let Ok(Some(prepared)) = any.unpack::<sql::CommandPreparedStatementQuery>() else {
            return Err(read_only());
        };
        let (query, _) = read_handle(&prepared.prepared_statement_handle, "descriptor.cmd")?;
        let messages = futures::StreamExt::chain(futures::stream::once(async { Ok::<_, Status>(first) }), stream).map_err(|status| FlightError::Tonic(Box::new(status)));
        let mut batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(messages);
        let mut params: Option<arrow::array::RecordBatch> = None;
        while let Some(batch) = batches.try_next().await.map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => Status::invalid_argument(format!("DoPut: the parameters: {other}")),
        })? {
            let rows = params.as_ref().map_or(0, arrow::array::RecordBatch::num_rows) + batch.num_rows();
            if rows > MAX_PARAMETER_ROWS {
                return Err(Status::invalid_argument(format!("DoPut: a query binds one row of parameters, got {rows}")));
            }
            if batch.num_rows() > 0 {
                params = Some(batch);
            }
        }
        let params = params.ok_or_else(|| Status::invalid_argument("DoPut: no row of parameters"))?;
        let handle = bound_handle(&query, &params)?;
        let result = sql::DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into()),
        };
        let put = PutResult {
            app_metadata: result.encode_to_vec().into(),
        };
        Ok(Response::new(Box::pin(futures::stream::once(async { Ok(put) }))))
    }

    #[tracing::instrument(skip_all)]
    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        let body = match action.r#type.as_str() {
            CREATE_PREPARED_STATEMENT => {
                let any = Any::decode(action.body.as_ref()).map_err(|e| Status::invalid_argument(format!("action.body: {e}")))?;
                let prepare: sql::ActionCreatePreparedStatementRequest = any
                    .unpack()
                    .map_err(|e| Status::invalid_argument(format!("action.body: {e}")))?
                    .ok_or_else(|| Status::invalid_argument("action.body: expected ActionCreatePreparedStatementRequest"))?;
                let parameters = self.engine.sql_parameters(&prepare.query).await?;
                // A statement with placeholders has no result schema until they are bound.
                let (dataset_schema, parameter_schema) = if parameters.is_empty() {
                    let schema = self.engine.schema(&Command::Sql { query: prepare.query.clone() }).await?;
                    (schema_ipc(&schema)?, bytes::Bytes::new())
                } else {
                    let fields: Vec<arrow::datatypes::Field> = parameters
                        .iter()
                        .map(|(name, data_type)| arrow::datatypes::Field::new(name, data_type.clone().unwrap_or(arrow::datatypes::DataType::Null), true))
                        .collect();
                    (bytes::Bytes::new(), schema_ipc(&arrow::datatypes::Schema::new(fields))?)
                };
                let result = sql::ActionCreatePreparedStatementResult {
                    prepared_statement_handle: prepare.query.into_bytes().into(),
                    dataset_schema,
                    parameter_schema,
                };
                result.as_any().encode_to_vec()
            }
            // Handles are the statement itself: nothing to release.
            CLOSE_PREPARED_STATEMENT => Vec::new(),
            other => {
                return Err(Status::unimplemented(format!(
                    "DoAction {other:?}: only {CREATE_PREPARED_STATEMENT} and {CLOSE_PREPARED_STATEMENT} are supported"
                )));
            }
        };
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::once(async { Ok(result) }))))
    }

    async fn list_actions(&self, _request: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = [
            (CREATE_PREPARED_STATEMENT, "Flight SQL: prepare a SQL query (no parameters)"),
            (CLOSE_PREPARED_STATEMENT, "Flight SQL: close a prepared statement"),
        ]
        .map(|(kind, description)| {
            Ok(ActionType {
                r#type: kind.to_owned(),
                description: description.to_owned(),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(actions))))
    }

    async fn do_exchange(&self, _request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("DoExchange: the query service is read-only"))
    }
}
