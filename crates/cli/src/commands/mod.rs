pub mod apps;
pub mod events;
pub mod runs;
pub mod serve;
