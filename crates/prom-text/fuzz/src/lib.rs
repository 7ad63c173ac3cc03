//! The checks the fuzz targets apply: the same oracle as the property tests.

#[path = "../../tests/common/oracle.rs"]
pub mod oracle;
