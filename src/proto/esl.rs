//! FreeSWITCH Event Socket codec (placeholder; being written).
