//! opsitem-creator
