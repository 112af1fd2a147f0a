//! kiln's datasets and readers
