//! kiln's layers, losses and parameter initialisation
