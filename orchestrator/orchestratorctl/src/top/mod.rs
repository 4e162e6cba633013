//! `top`'s parts: the figures as screen lines (`model`, pure), those
//! lines drawn into a ratatui frame (`view`, pure), and the terminal taken
//! over and given back (`terminal`). The verb's loop is
//! `commands/top.rs`.

pub mod model;
pub mod terminal;
pub mod view;
