//! AMI codec (being written).
