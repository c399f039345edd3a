//! Series to volume: the slices of one series in the order of [`super::series::order`]
//! with the voxel-to-patient geometry, then NIfTI-1. Mixed sizes are refused; uneven
//! spacing (gaps) is reported as a warning and the median spacing is used.

use dicom_dictionary_std::tags;

use super::series::{self, Slices};
use super::{DicomImage, Error};

/// A 3-D array of modality-LUT values with its geometry.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Columns (NIfTI i, fastest).
    pub cols: usize,
    /// Rows (NIfTI j).
    pub rows: usize,
    /// Slices (NIfTI k, slowest).
    pub slices: usize,
    /// `cols * rows * slices` values, column fastest, then row, then slice.
    pub values: Vec<f32>,
    /// Voxel spacing (column, row, slice) in mm.
    pub spacing: [f64; 3],
    /// Voxel `(i, j, k, 1)` → DICOM patient coordinates (LPS, mm), row-major 4x4.
    pub affine_lps: [[f64; 4]; 4],
    /// Problems found that did not stop the assembly (gaps, missing geometry).
    pub warnings: Vec<String>,
    /// Where each slice comes from, in volume order: (index into the images given to
    /// [`assemble`], frame). A SEG over the volume lists its frames in this order.
    pub sources: Vec<(usize, u32)>,
}

/// Assemble one series (single-frame instances in any order, or multi-frame instances)
/// into a volume.
pub fn assemble(images: &[DicomImage]) -> Result<Volume, Error> {
    let first = images
        .first()
        .ok_or_else(|| Error::Volume("no images to assemble".into()))?;
    let series = &first.meta.series_instance_uid;
    let mut warnings = Vec::new();
    for img in images {
        if img.meta.series_instance_uid != *series {
            return Err(Error::Volume(format!(
                "images of two series ({series} and {}): assemble one series at a time",
                img.meta.series_instance_uid
            )));
        }
        if (img.meta.rows, img.meta.cols) != (first.meta.rows, first.meta.cols) {
            return Err(Error::Volume(format!(
                "mixed slice sizes in series {series}: {}x{} and {}x{}",
                first.meta.rows, first.meta.cols, img.meta.rows, img.meta.cols
            )));
        }
    }
    let refs: Vec<&DicomImage> = images.iter().collect();
    let slices = series::order(&refs)?;
    let (spacing, assumed) = spacing(&refs, &slices)?;
    let Slices {
        order,
        origin,
        row_dir,
        col_dir,
        normal,
        warnings: unordered,
        ..
    } = slices;
    warnings.extend(unordered);
    warnings.extend(assumed);
    let [dc, dr, slice_spacing] = spacing;
    let (rows, cols) = (first.meta.rows as usize, first.meta.cols as usize);
    let mut values = Vec::with_capacity(rows * cols * order.len());
    for &(i, f) in &order {
        let frame = images[i].frame(f)?;
        if frame.channels != 1 {
            return Err(Error::Volume(
                "colour images cannot be written as a scalar volume".into(),
            ));
        }
        values.extend_from_slice(&frame.values);
    }
    let origin = origin.unwrap_or([0.0; 3]);
    let mut affine_lps = [[0.0; 4]; 4];
    for a in 0..3 {
        affine_lps[a][0] = row_dir[a] * dc;
        affine_lps[a][1] = col_dir[a] * dr;
        affine_lps[a][2] = normal[a] * slice_spacing;
        affine_lps[a][3] = origin[a];
    }
    affine_lps[3][3] = 1.0;
    Ok(Volume {
        cols,
        rows,
        slices: order.len(),
        values,
        spacing: [dc, dr, slice_spacing],
        affine_lps,
        warnings,
        sources: order,
    })
}

/// Voxel spacing (column, row, slice; mm) of the ordered `slices` of `images`: PixelSpacing
/// of the first slice; the median step between slice positions (uneven steps, a gap, are
/// reported), else SliceThickness, else 1 mm (reported). Two slices at one position, or a
/// PixelSpacing that is not positive, are refused. Returns the spacing and what was assumed.
pub fn spacing(images: &[&DicomImage], slices: &Slices) -> Result<([f64; 3], Vec<String>), Error> {
    let mut warnings = Vec::new();
    let order = &slices.order;
    let first = *order
        .first()
        .ok_or_else(|| Error::Volume("no slices".into()))?;
    let geom = |(i, f): (usize, u32), group, tag| series::frame_floats(images[i], f, group, tag);
    let spacing_rc =
        geom(first, tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING).filter(|v| v.len() == 2);
    let steps: Vec<f64> = slices
        .along
        .as_deref()
        .unwrap_or_default()
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    let slice_spacing = if !steps.is_empty() {
        let mut s = steps.clone();
        s.sort_by(f64::total_cmp);
        let median = s[s.len() / 2];
        if median <= 0.0 {
            return Err(Error::Geometry("two slices share the same position".into()));
        }
        if steps
            .iter()
            .any(|d| (d - median).abs() > 0.01 * median.max(1e-3))
        {
            warnings.push(format!(
                "uneven slice spacing (gap?): steps {steps:?} mm, median {median} mm used"
            ));
        }
        median
    } else {
        geom(first, tags::PIXEL_MEASURES_SEQUENCE, tags::SLICE_THICKNESS)
            .and_then(|v| v.first().copied())
            .filter(|t| t.is_finite() && *t > 0.0)
            .unwrap_or_else(|| {
                warnings.push("no usable slice spacing or SliceThickness: 1 mm assumed".into());
                1.0
            })
    };
    let [dr, dc] = match &spacing_rc {
        Some(v) if v.iter().all(|s| s.is_finite() && *s > 0.0) => [v[0], v[1]],
        Some(v) => {
            return Err(Error::Geometry(format!(
                "PixelSpacing {}\\{} is not a positive spacing: the volume would have no geometry",
                v[0], v[1]
            )));
        }
        None => {
            warnings.push("no PixelSpacing: 1 mm assumed".into());
            [1.0, 1.0]
        }
    };
    Ok(([dc, dr, slice_spacing], warnings))
}

/// The masks of one segment: each with the slice it covers, `(image, frame)` as in
/// [`Volume::sources`], and its 0/1 values (`rows * cols`).
pub type SegmentMasks<'a> = [((usize, u32), &'a [u8])];

impl Volume {
    /// A label map on this volume's grid and geometry: voxel = segment number (1, 2, ... in
    /// the order of `segments`) where its mask is set, 0 elsewhere; where segments overlap
    /// the later one (a SEG keeps every segment whole, a label map cannot). The one
    /// rasteriser of every front
    /// (`medfm segment --segments --out *.nii.gz`, the browser's label export).
    pub fn label_map(&self, segments: &[&SegmentMasks]) -> Result<Volume, Error> {
        let plane = self.rows * self.cols;
        let mut labels = vec![0.0f32; self.values.len()];
        for (number, masks) in segments.iter().enumerate() {
            let label = (number + 1) as f32;
            for &(source, mask) in masks.iter() {
                let k = self
                    .sources
                    .iter()
                    .position(|&s| s == source)
                    .ok_or_else(|| {
                        Error::Volume(format!(
                            "segment {}: frame {} of image {} is not a slice of the volume",
                            number + 1,
                            source.1,
                            source.0
                        ))
                    })?;
                if mask.len() != plane {
                    return Err(Error::Volume(format!(
                        "segment {}: a mask of {} values over {}x{} slices",
                        number + 1,
                        mask.len(),
                        self.cols,
                        self.rows
                    )));
                }
                for (l, &b) in labels[k * plane..(k + 1) * plane].iter_mut().zip(mask) {
                    if b != 0 {
                        *l = label;
                    }
                }
            }
        }
        Ok(Volume {
            cols: self.cols,
            rows: self.rows,
            slices: self.slices,
            values: labels,
            spacing: self.spacing,
            affine_lps: self.affine_lps,
            warnings: self.warnings.clone(),
            sources: self.sources.clone(),
        })
    }

    /// The voxel → RAS affine NIfTI expects (LPS with x and y negated).
    pub fn affine_ras(&self) -> [[f64; 4]; 4] {
        let mut a = self.affine_lps;
        for row in a.iter_mut().take(2) {
            row.iter_mut().for_each(|v| *v = -*v);
        }
        a
    }

    /// A NIfTI-1 single file (`.nii`): float32 voxels, sform and qform codes 1 (scanner).
    /// NIfTI-1 stores each dimension in 16 bits: a volume with a side over 32767 is
    /// refused, as is one without a positive spacing on every axis.
    pub fn to_nifti(&self) -> Result<Vec<u8>, Error> {
        let _span = tracing::info_span!("write", what = "nifti").entered();
        let dims = [self.cols, self.rows, self.slices];
        let dim = |n: usize| {
            i16::try_from(n).ok().filter(|&d| d > 0).ok_or_else(|| {
                Error::Volume(format!(
                    "a {}x{}x{} volume cannot be written as NIfTI-1 (each side 1 to 32767)",
                    dims[0], dims[1], dims[2]
                ))
            })
        };
        let (nx, ny, nz) = (dim(self.cols)?, dim(self.rows)?, dim(self.slices)?);
        if self.spacing.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(Error::Volume(format!(
                "voxel spacing {:?} mm is not positive on every axis",
                self.spacing
            )));
        }
        if self.values.len() != self.cols * self.rows * self.slices {
            return Err(Error::Volume(format!(
                "{} values for a {}x{}x{} volume",
                self.values.len(),
                dims[0],
                dims[1],
                dims[2]
            )));
        }
        let mut h = vec![0u8; 348];
        let put_i32 =
            |h: &mut Vec<u8>, off: usize, v: i32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
        let put_i16 =
            |h: &mut Vec<u8>, off: usize, v: i16| h[off..off + 2].copy_from_slice(&v.to_le_bytes());
        let put_f32 =
            |h: &mut Vec<u8>, off: usize, v: f32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put_i32(&mut h, 0, 348); // sizeof_hdr
        h[38] = b'r'; // regular
        for (i, d) in [3i16, nx, ny, nz, 1, 1, 1, 1].iter().enumerate() {
            put_i16(&mut h, 40 + 2 * i, *d);
        }
        put_i16(&mut h, 70, 16); // datatype FLOAT32
        put_i16(&mut h, 72, 32); // bitpix
        let pix = [
            1.0f32,
            self.spacing[0] as f32,
            self.spacing[1] as f32,
            self.spacing[2] as f32,
            0.0,
            0.0,
            0.0,
            0.0,
        ];
        for (i, p) in pix.iter().enumerate() {
            put_f32(&mut h, 76 + 4 * i, *p);
        }
        put_f32(&mut h, 108, 352.0); // vox_offset
        put_f32(&mut h, 112, 1.0); // scl_slope
        h[123] = 2 | (8 << 3); // xyzt_units: mm, s
        let desc = b"medfm: DICOM modality values";
        h[148..148 + desc.len()].copy_from_slice(desc);
        put_i16(&mut h, 252, 1); // qform_code: scanner
        put_i16(&mut h, 254, 1); // sform_code: scanner
        let a = self.affine_ras();
        // qform from the rotation part (quaternion), qfac for a left-handed frame.
        let mut r = [[0.0f64; 3]; 3];
        for (row, rr) in r.iter_mut().enumerate() {
            for (c, v) in rr.iter_mut().enumerate() {
                *v = a[row][c] / self.spacing[c];
            }
        }
        let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
            - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
            + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
        let qfac = if det < 0.0 { -1.0 } else { 1.0 };
        if qfac < 0.0 {
            for rr in r.iter_mut() {
                rr[2] = -rr[2];
            }
        }
        put_f32(&mut h, 76, qfac as f32); // pixdim[0] = qfac
        let trace = r[0][0] + r[1][1] + r[2][2];
        let (b, c, d) = if trace > -0.99 {
            let aq = 0.5 * (1.0 + trace).sqrt();
            (
                (r[2][1] - r[1][2]) / (4.0 * aq),
                (r[0][2] - r[2][0]) / (4.0 * aq),
                (r[1][0] - r[0][1]) / (4.0 * aq),
            )
        } else if r[0][0] >= r[1][1] && r[0][0] >= r[2][2] {
            let bq = 0.5 * (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt();
            let aq = (r[2][1] - r[1][2]) / (4.0 * bq);
            let s = if aq < 0.0 { -1.0 } else { 1.0 };
            (
                s * bq,
                s * (r[0][1] + r[1][0]) / (4.0 * bq),
                s * (r[0][2] + r[2][0]) / (4.0 * bq),
            )
        } else if r[1][1] >= r[2][2] {
            let cq = 0.5 * (1.0 - r[0][0] + r[1][1] - r[2][2]).sqrt();
            let aq = (r[0][2] - r[2][0]) / (4.0 * cq);
            let s = if aq < 0.0 { -1.0 } else { 1.0 };
            (
                s * (r[0][1] + r[1][0]) / (4.0 * cq),
                s * cq,
                s * (r[1][2] + r[2][1]) / (4.0 * cq),
            )
        } else {
            let dq = 0.5 * (1.0 - r[0][0] - r[1][1] + r[2][2]).sqrt();
            let aq = (r[1][0] - r[0][1]) / (4.0 * dq);
            let s = if aq < 0.0 { -1.0 } else { 1.0 };
            (
                s * (r[0][2] + r[2][0]) / (4.0 * dq),
                s * (r[1][2] + r[2][1]) / (4.0 * dq),
                s * dq,
            )
        };
        for (i, v) in [b, c, d, a[0][3], a[1][3], a[2][3]].iter().enumerate() {
            put_f32(&mut h, 256 + 4 * i, *v as f32);
        }
        for (row, off) in a.iter().take(3).zip([280usize, 296, 312]) {
            for (c, v) in row.iter().enumerate() {
                put_f32(&mut h, off + 4 * c, *v as f32);
            }
        }
        h[344..348].copy_from_slice(b"n+1\0");
        h.extend_from_slice(&[0, 0, 0, 0]); // extension flag
        // Sized once: growing a volume's bytes by doubling copied them again and again.
        h.reserve_exact(4 * self.values.len());
        for v in &self.values {
            h.extend_from_slice(&v.to_le_bytes());
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(cols: usize, spacing: [f64; 3]) -> Volume {
        let mut affine_lps = [[0.0; 4]; 4];
        for (i, row) in affine_lps.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        Volume {
            cols,
            rows: 1,
            slices: 1,
            values: vec![0.0; cols],
            spacing,
            affine_lps,
            warnings: Vec::new(),
            sources: vec![(0, 0)],
        }
    }

    /// NIfTI-1 stores each side in 16 bits: a wider volume is refused (it wrapped to a
    /// negative size before), as is one without a positive spacing (a NaN in the header).
    #[test]
    fn nifti_refuses_sides_past_16_bits_and_spacings_that_are_not_positive() {
        assert!(volume(32767, [1.0; 3]).to_nifti().is_ok());
        let err = volume(40000, [1.0; 3]).to_nifti().unwrap_err().to_string();
        assert!(
            err.contains("40000x1x1") && err.contains("1 to 32767"),
            "{err}"
        );
        for bad in [0.0, -1.0, f64::NAN] {
            let err = volume(4, [1.0, bad, 1.0])
                .to_nifti()
                .unwrap_err()
                .to_string();
            assert!(err.contains("not positive"), "{err}");
        }
    }
}
