//! Default embedder (LiteMedSAM encoder, pooled): leave-one-out retrieval over the real
//! fixtures finds frames of the same series. (Its vector on wgpu against the CPU's:
//! tests/parity.rs, `parity_wgpu`.)

mod common;

use common::*;
use medfm::Device;
use medfm::dicom;
use medfm::model::weights::Precision;
use medfm::pipeline::Segmenter;
use medfm::pipeline::embed::{self, EntryMeta, Index};

fn vector(seg: &Segmenter, image: &dicom::DicomImage, frame: u32) -> Vec<f32> {
    let pre = seg.prepare(image, frame).unwrap();
    let emb = seg.embed(&pre).unwrap();
    embed::pooled_vector(&emb, &pre).unwrap()
}

/// Leave-one-out nearest neighbours over every frame of the fixtures: for each frame of a
/// multi-frame or multi-slice series, are its nearest other frames from the same series?
#[test]
fn leave_one_out_retrieval_stays_in_the_series() {
    let device = Device::flex();
    let seg = Segmenter::new(load_model(Precision::Fp32, &device), device);
    let mut files: Vec<std::path::PathBuf> = [
        "emri_small.dcm",
        "CT_small.dcm",
        "MR_small.dcm",
        "693_UNCR.dcm",
        "JPEG-LL.dcm",
    ]
    .iter()
    .map(|f| data(f))
    .collect();
    for dir in ["series/ct5n", "series/mr700"] {
        let mut list: Vec<_> = std::fs::read_dir(data(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        list.sort();
        files.extend(list);
    }
    let mut index = Index::default();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let image = dicom::read(&bytes).unwrap();
        for f in 0..image.meta.frames {
            let meta = EntryMeta::for_frame(&image.meta, f, &file.display().to_string());
            index.add(vector(&seg, &image, f), meta).unwrap();
        }
    }
    let series_size = |uid: &str| index.meta.iter().filter(|m| m.series_uid == uid).count();
    let (mut queries, mut hit1, mut hit5_sum) = (0usize, 0usize, 0.0f64);
    for i in 0..index.len() {
        let uid = &index.meta[i].series_uid;
        let n = series_size(uid);
        if n < 2 {
            continue;
        }
        let hits: Vec<usize> = index
            .search(index.vector(i), 6)
            .into_iter()
            .map(|(j, _)| j)
            .filter(|&j| j != i)
            .collect();
        queries += 1;
        hit1 += usize::from(index.meta[hits[0]].series_uid == *uid);
        // precision@5, over at most the n-1 other members of the series.
        let k = 5.min(n - 1);
        let same = hits
            .iter()
            .take(k)
            .filter(|&&j| index.meta[j].series_uid == *uid)
            .count();
        hit5_sum += same as f64 / k as f64;
    }
    let p1 = hit1 as f64 / queries as f64;
    let p5 = hit5_sum / queries as f64;
    println!(
        "{} entries, {queries} queries: precision@1 {p1:.3}, precision@5 {p5:.3}",
        index.len()
    );
    // Floor: frames of one series share anatomy, size and contrast, and the distractors
    // are other modalities; a pooled encoder that did not see the image would score the
    // chance rate (about 1/3 here). Assert well above chance without overfitting the value.
    assert!(p1 >= 0.8, "precision@1 {p1}");
    assert!(p5 >= 0.6, "precision@5 {p5}");
}
