//! # kiln-data
//!
//! Datasets and readers for real data formats.

pub mod digits;

pub use digits::Digits;
