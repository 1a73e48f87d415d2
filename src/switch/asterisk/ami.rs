//! AMI client (being written).
