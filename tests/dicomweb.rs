//! DICOMweb without a server: the multipart parser (boundaries split across reads, parts
//! with and without Content-Length, quoted boundary parameters, preamble and epilogue,
//! truncation), the STOW-RS writer read back by the parser, URLs and QIDO queries, and the
//! DICOM JSON model of QIDO-RS and STOW-RS answers.

mod common;

use common::*;
use medfm::dicomweb::json;
use medfm::dicomweb::multipart::{self, Parser, parameter};
use medfm::dicomweb::url::{Level, Query, Resource};

/// Feed `body` in pieces of `sizes` (cycled), collecting the parts; then finish.
fn parse_in_pieces(ct: &str, body: &[u8], sizes: &[usize]) -> Result<Vec<multipart::Part>, String> {
    let mut p = Parser::for_content_type(ct).map_err(|e| e.to_string())?;
    let mut parts = Vec::new();
    let (mut at, mut k) = (0, 0);
    while at < body.len() {
        let n = sizes[k % sizes.len()].max(1).min(body.len() - at);
        parts.extend(p.feed(&body[at..at + n]).map_err(|e| e.to_string())?);
        at += n;
        k += 1;
    }
    p.finish().map_err(|e| e.to_string())?;
    Ok(parts)
}

/// Two real DICOM files, as a server sends them: a preamble, one part with Content-Length
/// and one without, transport padding after a boundary, an epilogue.
fn wado_body(boundary: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    let a = std::fs::read(data("MR_small.dcm")).unwrap();
    let b = std::fs::read(data("CT_small.dcm")).unwrap();
    let mut body = b"This is the preamble; ignore it.\r\n".to_vec();
    body.extend(
        format!(
            "--{boundary}\r\nContent-Type: application/dicom\r\nContent-Length: {}\r\n\r\n",
            a.len()
        )
        .as_bytes(),
    );
    body.extend(&a);
    body.extend(
        format!("\r\n--{boundary} \t\r\ncontent-type: application/dicom\r\n\r\n").as_bytes(),
    );
    body.extend(&b);
    body.extend(format!("\r\n--{boundary}--\r\nand an epilogue").as_bytes());
    (body, vec![a, b])
}

#[test]
fn multipart_parts_whatever_the_reads() {
    let boundary = "a1b2c3-boundary";
    let (body, want) = wado_body(boundary);
    let ct = format!("multipart/related; type=\"application/dicom\"; boundary=\"{boundary}\"");
    // Whole, byte by byte, and pieces that split the delimiter at every offset.
    let splits: Vec<Vec<usize>> = vec![
        vec![body.len()],
        vec![1],
        vec![2, 3, 5, 7],
        vec![17],
        vec![4096],
        vec![19, 1],
    ];
    for sizes in &splits {
        let parts = parse_in_pieces(&ct, &body, sizes).unwrap();
        assert_eq!(parts.len(), 2, "{sizes:?}");
        for (p, w) in parts.iter().zip(&want) {
            assert_eq!(p.content_type(), Some("application/dicom"));
            assert!(p.body == *w, "{sizes:?}: a part's bytes differ");
            assert!(medfm::dicom::read(&p.body).is_ok());
        }
        assert_eq!(
            parts[0].header("content-length"),
            Some(want[0].len().to_string().as_str())
        );
    }
    // An unquoted boundary parameter, another parameter order.
    let ct = format!("multipart/related;boundary={boundary};type=application/dicom");
    assert_eq!(parse_in_pieces(&ct, &body, &[333]).unwrap().len(), 2);
}

#[test]
fn multipart_refuses_truncated_and_malformed_bodies() {
    let boundary = "xyz";
    let (body, _) = wado_body(boundary);
    let ct = "multipart/related; boundary=xyz";
    // Cut anywhere before the closing delimiter: an error naming where, never fewer parts.
    for cut in [10, 60, 200, body.len() / 2, body.len() - 30] {
        let e = parse_in_pieces(ct, &body[..cut], &[64]).unwrap_err();
        assert!(
            e.contains("truncated") && e.contains("closing boundary"),
            "cut {cut}: {e}"
        );
    }
    // A Content-Length that overshoots the delimiter.
    let bad = b"--xyz\r\nContent-Length: 3\r\n\r\nabcdef\r\n--xyz--".to_vec();
    let e = parse_in_pieces(ct, &bad, &[4]).unwrap_err();
    assert!(e.contains("does not end at a boundary"), "{e}");
    // A Content-Length far past the body (the fuzzer's 999999999999): nothing that size is
    // allocated (that aborted the process), the body is cut short.
    let bad = b"--xyz\r\nContent-Length: 999999999999\r\n\r\nx\r\n--xyz-\r\nx\r\n--xyz--".to_vec();
    for pieces in [[1], [5], [100]] {
        let e = parse_in_pieces(ct, &bad, &pieces).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
    }
    let bad = b"--xyz\r\nContent-Length: lots\r\n\r\nabc\r\n--xyz--".to_vec();
    assert!(
        parse_in_pieces(ct, &bad, &[100])
            .unwrap_err()
            .contains("not a number")
    );
    let bad = b"--xyz\r\nno colon here\r\n\r\nabc\r\n--xyz--".to_vec();
    assert!(
        parse_in_pieces(ct, &bad, &[100])
            .unwrap_err()
            .contains("no colon")
    );
    // Not multipart, no boundary, a boundary too long.
    assert!(
        Parser::for_content_type("application/dicom")
            .unwrap_err()
            .to_string()
            .contains("not a multipart")
    );
    assert!(
        Parser::for_content_type("multipart/related; type=x")
            .unwrap_err()
            .to_string()
            .contains("no boundary")
    );
    assert!(Parser::new(&"b".repeat(257)).is_err());
    assert!(Parser::new("").is_err());
    // Orthanc's boundaries are 72 characters, past RFC 2046's 70: accepted.
    assert!(Parser::new(&"b".repeat(72)).is_ok());
    // A part larger than the limit.
    let mut p = Parser::new("xyz").unwrap().with_max_part(2);
    let e = p
        .feed(b"--xyz\r\n\r\nabcdef\r\n--xyz--")
        .unwrap_err()
        .to_string();
    assert!(e.contains("larger than 2 bytes"), "{e}");
    // An empty multipart (only the closing delimiter) is zero parts.
    assert_eq!(parse_in_pieces(ct, b"--xyz--\r\n", &[3]).unwrap().len(), 0);
}

#[test]
fn stow_bodies_read_back_and_boundaries_avoid_the_parts() {
    let a = std::fs::read(data("MR_small.dcm")).unwrap();
    let b = std::fs::read(data("CT_small.dcm")).unwrap();
    let boundary = multipart::boundary_for(&[&a, &b]).unwrap();
    assert!(boundary.starts_with("medfm-") && boundary.len() <= 70);
    let body = multipart::write(
        &boundary,
        &[("application/dicom", &a), ("application/dicom", &b)],
    );
    let parts = parse_in_pieces(
        &format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        &body,
        &[1000],
    )
    .unwrap();
    assert_eq!(parts.len(), 2);
    assert!(parts[0].body == a && parts[1].body == b);
}

#[test]
fn content_type_parameters() {
    let ct = r#"multipart/related; type="application/dicom"; boundary="a \"quoted\" one";x=y"#;
    assert_eq!(
        parameter(ct, "boundary").as_deref(),
        Some(r#"a "quoted" one"#)
    );
    assert_eq!(parameter(ct, "TYPE").as_deref(), Some("application/dicom"));
    assert_eq!(parameter(ct, "x").as_deref(), Some("y"));
    assert_eq!(parameter(ct, "missing"), None);
    assert_eq!(parameter("text/plain", "boundary"), None);
}

#[test]
fn resources_and_queries() {
    let r =
        Resource::parse("http://127.0.0.1:8042/dicom-web/studies/1.2.3/series/4.5/instances/6.7")
            .unwrap();
    assert_eq!(r.base, "http://127.0.0.1:8042/dicom-web");
    assert_eq!(
        (
            r.study.as_deref(),
            r.series.as_deref(),
            r.instance.as_deref()
        ),
        (Some("1.2.3"), Some("4.5"), Some("6.7"))
    );
    assert_eq!(
        r.url(),
        "http://127.0.0.1:8042/dicom-web/studies/1.2.3/series/4.5/instances/6.7"
    );
    let root = Resource::parse("https://pacs.example/dicom-web/").unwrap();
    assert_eq!(
        (root.base.as_str(), root.study.as_deref()),
        ("https://pacs.example/dicom-web", None)
    );
    assert_eq!(root.stow_url(), "https://pacs.example/dicom-web/studies");
    assert_eq!(
        r.frames_url(&[1, 3]).unwrap(),
        "http://127.0.0.1:8042/dicom-web/studies/1.2.3/series/4.5/instances/6.7/frames/1,3"
    );
    assert_eq!(
        r.metadata_url().unwrap(),
        "http://127.0.0.1:8042/dicom-web/studies/1.2.3/series/4.5/instances/6.7/metadata"
    );
    assert!(
        r.frames_url(&[0])
            .unwrap_err()
            .to_string()
            .contains("numbered from 1")
    );
    assert!(r.frames_url(&[]).is_err());
    assert!(
        root.frames_url(&[1])
            .unwrap_err()
            .to_string()
            .contains("belong to an instance")
    );
    assert!(root.metadata_url().is_err());
    for (bad, needle) in [
        ("ftp://x/studies/1", "not ftp"),
        ("http://user:pw@x/dicom-web", "credentials"),
        (
            "http://x/dicom-web/studies/1.2/series",
            "not followed by a UID",
        ),
        (
            "http://x/dicom-web/studies/1.2/instances/3",
            "expected /studies",
        ),
        ("http://x/dicom-web/studies/abc", "not a DICOM UID"),
        ("http://x/dicom-web/studies/../etc", "not a DICOM UID"),
        ("http://x/dicom-web?PatientID=1", "without a query"),
        ("nothing", "not an http(s) URL"),
    ] {
        let e = Resource::parse(bad).unwrap_err().to_string();
        assert!(e.contains(needle), "{bad}: {e}");
    }
    assert_eq!(Resource::path_of("http://h:1/a/b?x=1"), "/a/b");
    let q = Query {
        patient_name: Some("DOE^J*".into()),
        date: Some("20200101-".into()),
        modality: Some("MR".into()),
        limit: Some(5),
        ..Default::default()
    };
    let u = q.url(&root, Level::Studies).unwrap();
    assert!(u.starts_with("https://pacs.example/dicom-web/studies?PatientName=DOE%5EJ*&StudyDate=20200101-&ModalitiesInStudy=MR&limit=5"), "{u}");
    assert!(
        q.url(&root, Level::Series)
            .unwrap_err()
            .to_string()
            .contains("needs a study")
    );
    let with_study = Resource::parse("https://pacs.example/dicom-web/studies/1.2").unwrap();
    assert!(
        q.url(&with_study, Level::Series)
            .unwrap()
            .contains("/studies/1.2/series?")
    );
    for bad in ["2020", "20200101-2021", "-", "a2020010"] {
        let q = Query {
            date: Some(bad.into()),
            ..Default::default()
        };
        assert!(q.validate().is_err(), "{bad}");
    }
}

#[test]
fn dicom_json_results() {
    let studies = br#"[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00100020": {"vr": "LO", "Value": ["P1"]}, "00080020": {"vr": "DA", "Value": ["20200102"]},
        "00080061": {"vr": "CS", "Value": ["CT", "SEG"]}, "00201206": {"vr": "IS", "Value": [2]},
        "00201208": {"vr": "IS", "Value": ["12"]}, "00081030": {"vr": "LO"}}]"#;
    let s = json::studies(studies).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (
            s[0].uid.as_str(),
            s[0].patient_name.as_str(),
            s[0].patient_id.as_str()
        ),
        ("1.2.3", "Doe^Jane", "P1")
    );
    assert_eq!(
        (s[0].modalities.clone(), s[0].series, s[0].instances),
        (vec!["CT".to_string(), "SEG".into()], Some(2), Some(12))
    );
    assert_eq!(s[0].description, "");
    assert!(json::studies(b"").unwrap().is_empty());
    assert!(
        json::studies(br#"[{"00100020": {"vr": "LO", "Value": ["P1"]}}]"#)
            .unwrap_err()
            .to_string()
            .contains("StudyInstanceUID")
    );
    assert!(json::studies(b"{not json").is_err());
    assert!(
        json::studies(b"42")
            .unwrap_err()
            .to_string()
            .contains("a number")
    );
    let stow = br#"{"00081199": {"vr": "SQ", "Value": [
        {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.66.4"]}, "00081155": {"vr": "UI", "Value": ["9.8"]}},
        {"00081155": {"vr": "UI", "Value": ["9.9"]}, "00081196": {"vr": "US", "Value": [45056]}}]},
        "00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["9.7"]}, "00081197": {"vr": "US", "Value": [272]}}]}}"#;
    let r = json::stow_response(stow).unwrap();
    let got: Vec<(&str, &str, Option<&str>)> = r
        .iter()
        .map(|x| (x.uid.as_str(), x.status, x.reason.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("9.8", "success", None),
            ("9.9", "warning", Some("B000")),
            ("9.7", "failure", Some("0110"))
        ]
    );
}
