//! kiln's optimizers
