//! control

pub mod catalog;
pub mod signal;
pub mod supervisor;
