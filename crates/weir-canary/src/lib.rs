//! weir-canary
