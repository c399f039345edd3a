//! A minimal C-STORE SCU (dicom-ul client) for the node's tests: what DCMTK refuses to
//! send, such as a data set cut short or a deflate bomb. Included with `#[path]` by the
//! tests that use it (dicom-ul is a dev-dependency of crates/cli only).

use dicom_ul::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use medfm::dimse;

/// One C-STORE of `data` (a data set in transfer syntax `ts`) from AE `calling` to the
/// node on `port`: the response's status and error comment.
pub fn raw_store(
    port: u16,
    calling: &str,
    sop_class: &str,
    sop_instance: &str,
    ts: &str,
    data: &[u8],
) -> (u16, String) {
    let mut a = ClientAssociationOptions::new()
        .calling_ae_title(calling)
        .called_ae_title("MEDFM")
        .with_presentation_context(sop_class, vec![ts])
        .establish(format!("127.0.0.1:{port}"))
        .unwrap();
    let context = a.presentation_contexts()[0].id;
    a.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: context,
            value_type: PDataValueType::Command,
            is_last: true,
            data: dimse::store_rq(1, sop_class, sop_instance),
        }],
    })
    .unwrap();
    let mut w = a.send_pdata(context);
    std::io::Write::write_all(&mut w, data).unwrap();
    w.finish().unwrap();
    let reply = match a.receive().unwrap() {
        Pdu::PData { data } => dimse::Command::read(&data[0].data).unwrap(),
        other => panic!("unexpected {other:?}"),
    };
    let _ = a.release();
    (
        reply.status().unwrap(),
        reply.error_comment().unwrap_or_default(),
    )
}
