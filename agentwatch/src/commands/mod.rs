//! The subcommands, thin users of the pipeline's stages.

pub mod check;
pub mod daemon;
pub mod docs;
pub mod events;
pub mod policy;
pub mod run;
pub mod scan;
pub mod top;
pub mod why;
