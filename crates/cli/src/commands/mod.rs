pub mod apps;
pub mod doctor;
pub mod deploy;
pub mod events;
pub mod runs;
pub mod serve;
