//! The `patchtcga` command line without LibTorch: the commands that read slides and datasets
//! (`build`, `split`, `verify`, `verify-layout`, `extract`, `stats`, `info`, `report`,
//! `bench regions`) and what the network commands of `patchtcga-nn` share with them.

pub mod commands;
pub mod network;
