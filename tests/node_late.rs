//! A series completed again (issue 33, the node's open ends): sent again unchanged, it
//! is not reopened; with a late instance, a forward sends only that instance and the
//! segment rule runs on the whole series again (a new SEG for the new middle slice),
//! against DCMTK's storescp as the PACS.

mod common;

use common::node::*;
use medfm::dicom::identify;

#[test]
fn a_late_instance_runs_only_what_it_changes() {
    let pacs_port = free_port();
    let node = Node::start(
        "late",
        &format!(
            "series_idle_seconds = 1\nretry_seconds = 1\nmax_attempts = 3\n\
             [[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = {pacs_port}\n\
             [[rule]]\nname = \"brain\"\nmodality = \"MR\"\njobs = [\"forward\", \"segment\"]\n\
             [[rule.segment]]\nlabel = \"Brain\"\nbox = [0.18, 0.23, 0.84, 0.94]\n"
        ),
    );
    let pacs = StoreScp::start(&node.dir.join("pacs"), pacs_port);
    let files = as_dcmtk_writes(&brain(), &node.dir.join("sent"));
    // The first slice comes late: the middle slice moves, so the SEG is another one.
    let (late, first) = files.split_at(1);
    let count = |what: &str| node.log().matches(what).count();

    // The series without its last slice: forwarded whole, and its SEG.
    node.send_ok(first);
    wait_for(120, "the series and its SEG at the PACS", || {
        pacs.received().len() == first.len() + 1
    });
    pacs.assert_holds(first);
    let queued = node.log();
    assert!(
        queued.contains(&format!("files={}", first.len())),
        "the first forward sends the series: {queued}"
    );

    // The same instances again: duplicates, stored once; the series stays complete.
    node.send_ok(first);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(count("series complete"), 1, "{}", node.log());
    assert_eq!(count("forward queued"), 1, "{}", node.log());

    // The late slice: a forward of that slice only, and a new SEG over the whole series.
    node.send_ok(late);
    wait_for(120, "the late slice and the new SEG at the PACS", || {
        pacs.received().len() == files.len() + 2
    });
    pacs.assert_holds(late);
    wait_for(30, "the second forward's line", || {
        count("forward queued") == 2
    });
    let log = node.log();
    let forwards: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("forward queued"))
        .collect();
    assert!(forwards[1].contains("files=1"), "{forwards:?}");
    let segs: Vec<String> = pacs
        .received()
        .values()
        .filter_map(|p| {
            let ids = identify(&std::fs::read(p).ok()?).ok()?;
            (ids.modality == "SEG").then_some(ids.sop_instance_uid)
        })
        .collect();
    assert_eq!(
        segs.len(),
        2,
        "two SEGs, the second over 11 slices: {segs:?}"
    );
}
