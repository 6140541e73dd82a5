//! Wire types of the Inngest SDK HTTP protocol and the pure domain types sluice builds on.
//!
//! ```text
//!   SDK worker ──register──▶ RegisterRequest / FunctionConfig
//!   client     ──POST /e──▶  EventPayload  ──▶ StoredEvent
//!   sluice     ──call────▶   CallRequest   ◀── 200 | 206 [GeneratorOp…] | 4xx/5xx
//! ```
//!
//! Nothing in this crate does I/O; it is shared by the store, the engine and the API.

pub mod call;
pub mod cron;
pub mod deployment;
pub mod duration;
pub mod error;
pub mod event;
pub mod function;
pub mod ids;
pub mod opcode;
pub mod run;
pub mod signing;
pub mod sync_url;

pub use error::ProtocolError;
