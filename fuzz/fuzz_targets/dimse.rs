//! Fuzz target: the DIMSE command set reader (what a peer sends the edge node) over
//! arbitrary bytes, and every accessor on what it accepts. Errors are expected; any panic
//! is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medfm_dicom::dimse;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(c) = dimse::Command::read(bytes) {
        let _ = c.command_field();
        let _ = c.message_id();
        let _ = c.message_id_responded();
        let _ = c.status();
        let _ = c.has_data_set();
        let _ = c.affected_sop_class();
        let _ = c.affected_sop_instance();
        let _ = c.error_comment();
    }
});
