//! Image embeddings for similarity search, computed where the images are.
//!
//! Default embedder (no extra download): the LiteMedSAM encoder output `[1, 256, 64, 64]`
//! averaged over the grid cells that cover the image (the zero padding added by
//! preprocessing is left out: `ceil(new_rows / 4) x ceil(new_cols / 4)` cells), then
//! L2-normalised to a 256-d vector. A series vector is the L2-normalised mean of its
//! frame vectors. Similarity is the cosine (a dot product of normalised vectors).

use crate::model::Embedding;

use burn::tensor::Tensor;

use super::{Error, Preprocessed, tensor_to_vec, tensor_to_vec_async};

/// Dimension of the default (LiteMedSAM) embedding vector.
pub const DIM: usize = 256;

/// Scale `v` to unit length (left as is when it is all zeros).
pub fn l2_normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// The pooled, normalised 256-d vector of one encoded frame (see module docs).
pub fn pooled_vector(emb: &Embedding, pre: &Preprocessed) -> Result<Vec<f32>, Error> {
    Ok(l2_normalize(tensor_to_vec(pooled(emb, pre))?))
}

/// The default vector of frame `frame` of `image`: LiteMedSAM's encoder output on the
/// frame, pooled ([`pooled_vector`]).
pub fn frame_vector(
    segmenter: &super::Segmenter,
    image: &crate::dicom::DicomImage,
    frame: u32,
) -> Result<Vec<f32>, Error> {
    let pre = segmenter.prepare(image, frame)?;
    let emb = segmenter.embed(&pre)?;
    pooled_vector(&emb, &pre)
}

/// [`pooled_vector`] with asynchronous readback (WebGPU in a browser).
pub async fn pooled_vector_async(emb: &Embedding, pre: &Preprocessed) -> Result<Vec<f32>, Error> {
    Ok(l2_normalize(tensor_to_vec_async(pooled(emb, pre)).await?))
}

/// Mean over the unpadded grid cells: `[1, C, 64, 64] -> [C]`, still on the device.
fn pooled(emb: &Embedding, pre: &Preprocessed) -> Tensor<1> {
    let [_, c, h, w] = emb.tensor.dims();
    let gh = pre.new_rows.div_ceil(4).clamp(1, h);
    let gw = pre.new_cols.div_ceil(4).clamp(1, w);
    emb.tensor
        .clone()
        .slice([0..1, 0..c, 0..gh, 0..gw])
        .mean_dim(3)
        .mean_dim(2)
        .reshape([c])
}

/// The normalised mean of several normalised vectors (a series vector).
pub fn mean_vector(vectors: &[Vec<f32>]) -> Vec<f32> {
    let dim = vectors.first().map_or(0, Vec::len);
    let mut acc = vec![0.0f32; dim];
    for v in vectors {
        acc.iter_mut().zip(v).for_each(|(a, x)| *a += x);
    }
    l2_normalize(acc)
}

/// What an index entry refers to. No patient identifiers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EntryMeta {
    /// Study Instance UID.
    pub study_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// SOP Instance UID (empty for a series entry).
    pub instance_uid: String,
    /// Frame (0-based; `None` for a series entry).
    pub frame: Option<u32>,
    /// Modality.
    pub modality: String,
    /// Source file (empty for a series entry or when unknown).
    pub file: String,
}

impl EntryMeta {
    /// The entry of one frame of an image read from `file`.
    pub fn for_frame(meta: &crate::dicom::ImageMeta, frame: u32, file: &str) -> Self {
        Self {
            study_uid: meta.study_instance_uid.clone(),
            series_uid: meta.series_instance_uid.clone(),
            instance_uid: meta.sop_instance_uid.clone(),
            frame: Some(frame),
            modality: meta.modality.clone(),
            file: file.to_string(),
        }
    }
}

/// An in-memory cosine index of normalised vectors with metadata.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// Vector dimension (0 while empty).
    pub dim: usize,
    /// Row-major `len x dim` vectors.
    pub vectors: Vec<f32>,
    /// One entry per vector.
    pub meta: Vec<EntryMeta>,
}

impl Index {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Add a normalised vector.
    pub fn add(&mut self, vector: Vec<f32>, meta: EntryMeta) -> Result<(), Error> {
        if self.dim == 0 {
            self.dim = vector.len();
        }
        if vector.len() != self.dim || self.dim == 0 {
            return Err(Error::Index(format!(
                "vector of dimension {} added to an index of dimension {}",
                vector.len(),
                self.dim
            )));
        }
        self.vectors.extend(vector);
        self.meta.push(meta);
        Ok(())
    }

    /// The vector of entry `i`.
    pub fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    /// The `k` entries most similar to `query` (cosine), best first, as `(entry, score)`.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut scored: Vec<(usize, f32)> = (0..self.len())
            .map(|i| {
                (
                    i,
                    self.vector(i).iter().zip(query).map(|(a, b)| a * b).sum(),
                )
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        scored
    }

    /// The vectors as a NumPy `.npy` file (format 1.0, `<f4`, shape `(len, dim)`).
    pub fn to_npy(&self) -> Vec<u8> {
        let header = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
            self.len(),
            self.dim
        );
        // Magic (6) + version (2) + header length (2) + header, padded with spaces to a
        // multiple of 64 and ended by a newline.
        let unpadded = 10 + header.len() + 1;
        let pad = unpadded.div_ceil(64) * 64 - unpadded;
        let mut out = Vec::with_capacity(unpadded + pad + self.vectors.len() * 4);
        out.extend_from_slice(b"\x93NUMPY\x01\x00");
        out.extend_from_slice(&((header.len() + pad + 1) as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend(std::iter::repeat_n(b' ', pad));
        out.push(b'\n');
        for v in &self.vectors {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The metadata as JSON lines, one entry per line, in vector order.
    pub fn to_jsonl(&self) -> String {
        self.meta
            .iter()
            .map(|m| serde_json::to_string(m).expect("metadata serialises") + "\n")
            .collect()
    }

    /// Read an index from its vectors (`.npy`) and metadata (`.jsonl`) files.
    pub fn read(npy: &std::path::Path, jsonl: &std::path::Path) -> Result<Self, crate::Error> {
        let vectors = std::fs::read(npy)
            .map_err(|e| crate::Error::from(e).context(format!("reading {}", npy.display())))?;
        let meta = std::fs::read_to_string(jsonl)
            .map_err(|e| crate::Error::from(e).context(format!("reading {}", jsonl.display())))?;
        Ok(Index::from_parts(&vectors, &meta)?)
    }

    /// Every index of a folder (each `NAME.npy` with its `NAME.jsonl`, NAME as it is: UIDs
    /// have dots) as one, in name order: the edge node's `<spool>/.node/index`. A pair cut
    /// short (a job interrupted between its two files) is left out, with a warning.
    ///
    /// # Returns
    /// The index and the warnings; an error when the folder holds no index.
    pub fn read_folder(dir: &std::path::Path) -> Result<(Self, Vec<String>), crate::Error> {
        let listing = std::fs::read_dir(dir)
            .map_err(|e| crate::Error::from(e).context(format!("reading {}", dir.display())))?;
        let mut parts: Vec<std::path::PathBuf> = listing
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "npy"))
            .collect();
        parts.sort();
        let mut merged: Option<Index> = None;
        let mut warnings = Vec::new();
        for npy in &parts {
            let jsonl = npy.with_extension("jsonl");
            if !jsonl.exists() {
                warnings.push(format!(
                    "{} has no {}: left out",
                    npy.display(),
                    jsonl.display()
                ));
                continue;
            }
            let part = Index::read(npy, &jsonl)?;
            match merged.as_mut() {
                None => merged = Some(part),
                Some(m) => {
                    for i in 0..part.len() {
                        m.add(part.vector(i).to_vec(), part.meta[i].clone())
                            .map_err(|e| {
                                crate::Error::from(e).context(npy.display().to_string())
                            })?;
                    }
                }
            }
        }
        let index = merged.ok_or_else(|| {
            crate::Error::bad_input(format!(
                "{} holds no index (NAME.npy + NAME.jsonl)",
                dir.display()
            ))
        })?;
        Ok((index, warnings))
    }

    /// Read an index written by [`Index::to_npy`] and [`Index::to_jsonl`].
    pub fn from_parts(npy: &[u8], jsonl: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Index(format!("not an index .npy file: {why}"));
        if npy.len() < 10 || &npy[..6] != b"\x93NUMPY" {
            return Err(bad("no NumPy magic"));
        }
        let hlen = u16::from_le_bytes([npy[8], npy[9]]) as usize;
        let header = std::str::from_utf8(
            npy.get(10..10 + hlen)
                .ok_or_else(|| bad("truncated header"))?,
        )
        .map_err(|_| bad("header is not text"))?;
        if !header.contains("'descr': '<f4'") || header.contains("'fortran_order': True") {
            return Err(bad("only little-endian float32, C order, is supported"));
        }
        let shape = header
            .split("'shape': (")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .ok_or_else(|| bad("no shape"))?;
        let dims: Vec<usize> = shape
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| bad("shape is not numeric")))
            .collect::<Result<_, _>>()?;
        let [len, dim] = dims[..] else {
            return Err(bad("shape is not 2-D"));
        };
        let body = &npy[10 + hlen..];
        if dim == 0 && len > 0 {
            return Err(bad("vectors of dimension 0"));
        }
        // Checked: a header can declare any shape, e.g. (2^62, 2^62).
        let bytes = len.checked_mul(dim).and_then(|n| n.checked_mul(4));
        if bytes != Some(body.len()) {
            return Err(bad(&format!(
                "{} data bytes for shape ({len}, {dim})",
                body.len()
            )));
        }
        let vectors = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let meta = jsonl
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .map_err(|e| Error::Index(format!("index metadata line: {e}")))
            })
            .collect::<Result<Vec<EntryMeta>, _>>()?;
        if meta.len() != len {
            return Err(Error::Index(format!(
                "{len} vectors but {} metadata lines",
                meta.len()
            )));
        }
        Ok(Self { dim, vectors, meta })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(i: u32) -> EntryMeta {
        EntryMeta {
            study_uid: "1.2".into(),
            series_uid: "1.2.3".into(),
            instance_uid: format!("1.2.3.{i}"),
            frame: Some(i),
            modality: "MR".into(),
            file: String::new(),
        }
    }

    #[test]
    fn npy_and_jsonl_round_trip_and_search() {
        let mut index = Index::default();
        index
            .add(l2_normalize(vec![1.0, 0.0, 0.0]), meta(0))
            .unwrap();
        index
            .add(l2_normalize(vec![0.0, 1.0, 0.0]), meta(1))
            .unwrap();
        index
            .add(l2_normalize(vec![1.0, 1.0, 0.0]), meta(2))
            .unwrap();
        let npy = index.to_npy();
        assert_eq!((npy.len() - 3 * 3 * 4) % 64, 0, "header padded to 64 bytes");
        let back = Index::from_parts(&npy, &index.to_jsonl()).unwrap();
        assert_eq!(back.vectors, index.vectors);
        assert_eq!(back.meta, index.meta);
        let hits = back.search(&[1.0, 0.0, 0.0], 2);
        assert_eq!(hits[0].0, 0);
        assert_eq!(hits[1].0, 2);
        assert!(
            index.add(vec![1.0, 0.0], meta(3)).is_err(),
            "wrong dimension refused"
        );
        assert!(
            Index::from_parts(&npy[..npy.len() - 4], &index.to_jsonl()).is_err(),
            "truncated refused"
        );
    }

    /// A header declaring a shape whose byte count overflows is refused with the reason
    /// (it panicked with overflow checks and could wrap to the body's size without).
    #[test]
    fn npy_shape_overflow_is_refused() {
        let header =
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }";
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
        npy.extend_from_slice(header.as_bytes());
        let err = Index::from_parts(&npy, "").unwrap_err().to_string();
        assert!(err.contains("data bytes for shape"), "{err}");
        let zero = npy_with_shape("(3, 0)");
        let err = Index::from_parts(&zero, "").unwrap_err().to_string();
        assert!(err.contains("dimension 0"), "{err}");
    }

    /// Per-series vectors: the normalised mean of each series' frames, series in order of
    /// first appearance, without instance, frame or file.
    #[test]
    fn per_series_pools_frames_in_order() {
        let m = |series: &str, i: u32| EntryMeta {
            series_uid: series.into(),
            ..meta(i)
        };
        let frames = vec![
            (vec![1.0, 0.0], m("b", 0)),
            (vec![0.0, 1.0], m("a", 1)),
            (vec![0.0, 1.0], m("b", 2)),
        ];
        let out = per_series(frames);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].1.series_uid.as_str(), out[1].1.series_uid.as_str()),
            ("b", "a")
        );
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!(
            (out[0].0[0] - h).abs() < 1e-6 && (out[0].0[1] - h).abs() < 1e-6,
            "{:?}",
            out[0].0
        );
        assert_eq!(out[1].0, vec![0.0, 1.0]);
        assert!(
            out[0].1.instance_uid.is_empty()
                && out[0].1.frame.is_none()
                && out[0].1.file.is_empty()
        );
    }

    fn npy_with_shape(shape: &str) -> Vec<u8> {
        let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
        npy.extend_from_slice(header.as_bytes());
        npy
    }
}

/// The model that turns frames into vectors: LiteMedSAM's pooled encoder output (the
/// default, 256-d) or a bring-your-own DINOv2 ([`VitEmbedder`]). The shells load the model
/// (files, device); the rule of what a frame's vector is lives here.
pub enum Embedder {
    /// The LiteMedSAM encoder, pooled over the grid cells that cover the image.
    LiteMedSam(Box<super::Segmenter>),
    /// A DINOv2-compatible ViT.
    Vit(Box<VitEmbedder>),
}

impl Embedder {
    /// The L2-normalised vector of frame `frame` of `image`.
    pub fn frame_vector(
        &self,
        image: &crate::dicom::DicomImage,
        frame: u32,
    ) -> Result<Vec<f32>, Error> {
        match self {
            Embedder::LiteMedSam(seg) => frame_vector(seg, image, frame),
            Embedder::Vit(e) => e.vector(&image.frame(frame)?, &image.meta),
        }
    }
}

/// One vector per series: the normalised mean of each series' frame vectors, in the order
/// the series first appear, with the first frame's metadata (no instance, frame or file).
pub fn per_series(frames: Vec<(Vec<f32>, EntryMeta)>) -> Vec<(Vec<f32>, EntryMeta)> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: std::collections::HashMap<String, Vec<(Vec<f32>, EntryMeta)>> =
        Default::default();
    for (v, m) in frames {
        if !groups.contains_key(&m.series_uid) {
            order.push(m.series_uid.clone());
        }
        groups.entry(m.series_uid.clone()).or_default().push((v, m));
    }
    order
        .into_iter()
        .map(|uid| {
            let members = &groups[&uid];
            let vectors: Vec<Vec<f32>> = members.iter().map(|(v, _)| v.clone()).collect();
            let first = &members[0].1;
            let meta = EntryMeta {
                instance_uid: String::new(),
                frame: None,
                file: String::new(),
                ..first.clone()
            };
            (mean_vector(&vectors), meta)
        })
        .collect()
}

/// Which ViT output becomes the vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// The CLS token after the final LayerNorm (`pooler_output`).
    Cls,
    /// The mean of the patch tokens after the final LayerNorm.
    PatchMean,
}

/// A bring-your-own DINOv2-compatible embedder (e.g. RAD-DINO): the ViT on its device and
/// the input convention of its Hugging Face processor.
pub struct VitEmbedder {
    /// The model.
    pub vit: crate::model::vit::Vit,
    /// Its device.
    pub device: burn::tensor::Device,
    /// Input side (crop size).
    pub size: usize,
    /// Per-channel mean of the normalisation.
    pub mean: [f32; 3],
    /// Per-channel standard deviation of the normalisation.
    pub std: [f32; 3],
    /// CLS or patch mean.
    pub pool: Pool,
}

/// Largest ViT input side accepted from a `preprocessor_config.json`.
const MAX_INPUT: usize = 4096;

/// The fields of a Hugging Face `preprocessor_config.json` used here.
#[derive(serde::Deserialize, Default)]
struct Processor {
    crop_size: Option<serde_json::Value>,
    size: Option<serde_json::Value>,
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
}

impl VitEmbedder {
    /// From the files of a Hugging Face model directory: `config.json`,
    /// `model.safetensors` and, if present, `preprocessor_config.json` (crop size or
    /// shortest edge, mean, std; defaults: the config's image size and ImageNet's).
    pub fn from_files(
        config: &str,
        weights: Vec<u8>,
        preprocessor: Option<&str>,
        pool: Pool,
        device: &burn::tensor::Device,
    ) -> Result<Self, Error> {
        let cfg = crate::model::vit::VitConfig::from_json(config)?;
        let vit = cfg.load(weights, device)?;
        let p: Processor = match preprocessor {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| Error::Unsupported(format!("preprocessor_config.json: {e}")))?,
            None => Processor::default(),
        };
        let side = |v: &Option<serde_json::Value>, key: &str| {
            v.as_ref()
                .and_then(|v| v.get(key).and_then(|x| x.as_u64()).or_else(|| v.as_u64()))
        };
        let size = side(&p.crop_size, "height")
            .or_else(|| side(&p.size, "shortest_edge"))
            .map(|s| s as usize)
            .unwrap_or(cfg.image_size);
        // Checked before any input is made from it: size^2 x 3 values per frame.
        if !(cfg.patch_size..=MAX_INPUT).contains(&size) {
            return Err(Error::Unsupported(format!(
                "preprocessor_config.json: crop size {size} is not supported ({} to {MAX_INPUT})",
                cfg.patch_size
            )));
        }
        Ok(Self {
            vit,
            device: device.clone(),
            size,
            mean: p.image_mean.unwrap_or([0.485, 0.456, 0.406]),
            std: p.image_std.unwrap_or([0.229, 0.224, 0.225]),
            pool,
        })
    }

    /// The L2-normalised vector of one frame (`[D]`).
    pub fn vector(
        &self,
        frame: &crate::dicom::Frame,
        meta: &crate::dicom::ImageMeta,
    ) -> Result<Vec<f32>, Error> {
        let pixels = super::vit_input(frame, meta, self.size, self.mean, self.std)?;
        let x = Tensor::<4>::from_data(
            burn::tensor::TensorData::new(pixels, [1, 3, self.size, self.size]),
            &self.device,
        );
        let out = self.vit.forward(x);
        let v = match self.pool {
            Pool::Cls => out.cls,
            Pool::PatchMean => out.patch_mean,
        };
        let d = v.dims()[1];
        Ok(l2_normalize(tensor_to_vec(v.reshape([d]))?))
    }
}
