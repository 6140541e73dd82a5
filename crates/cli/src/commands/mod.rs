pub mod apps;
pub mod deploy;
pub mod doctor;
pub mod events;
pub mod runs;
pub mod serve;
