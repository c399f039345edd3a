//! A catalogue of what a set of DICOM files holds: patients → studies → series, for
//! `medfm info` (the viewer's series list and slice order come from [`super::series`]).
//! Patient identifiers are replaced by ordinal labels unless the caller asks for them.

use std::collections::BTreeMap;

use super::DicomImage;

/// One series of the catalogue.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeriesEntry {
    /// "patient 1", ... (or the PatientID when identifiers are shown).
    pub patient: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// Modality.
    pub modality: String,
    /// `rows x cols` of the first instance (with `+` when instances differ in size).
    pub size: String,
    /// Instances (files) in the series.
    pub instances: usize,
    /// Frames summed over the instances.
    pub frames: u64,
    /// Transfer syntaxes seen.
    pub transfer_syntaxes: Vec<String>,
    /// `None` when every instance's first frame decodes, else the first reason it does not.
    pub not_decodable: Option<String>,
    /// Files of the series.
    pub files: Vec<String>,
    /// The VOIs of the first instance's first frame, numbered as `medfm convert --voi N`
    /// takes them (see [`super::lut::Voi::describe`]); a broken VOI attribute is listed
    /// as its error.
    pub vois: Vec<String>,
}

/// Builds a catalogue from parsed files.
#[derive(Debug, Default)]
pub struct Catalog {
    patients: Vec<String>,
    series: BTreeMap<(usize, String, String), SeriesEntry>,
    show_patient_ids: bool,
}

impl Catalog {
    /// A catalogue; `show_patient_ids` keeps PatientID instead of ordinal labels.
    pub fn new(show_patient_ids: bool) -> Self {
        Self {
            show_patient_ids,
            ..Self::default()
        }
    }

    /// Add one parsed file; `decode` is the outcome of decoding its first frame.
    pub fn add(&mut self, file: &str, image: &DicomImage, decode: Result<(), String>) {
        let pid = image.patient_id();
        let p = match self.patients.iter().position(|x| *x == pid) {
            Some(p) => p,
            None => {
                self.patients.push(pid.clone());
                self.patients.len() - 1
            }
        };
        let m = &image.meta;
        let size = format!("{}x{}", m.rows, m.cols);
        let label = if self.show_patient_ids {
            pid
        } else {
            format!("patient {}", p + 1)
        };
        let key = (
            p,
            m.study_instance_uid.clone(),
            m.series_instance_uid.clone(),
        );
        let e = self.series.entry(key).or_insert_with(|| SeriesEntry {
            patient: label,
            study_uid: m.study_instance_uid.clone(),
            series_uid: m.series_instance_uid.clone(),
            modality: m.modality.clone(),
            size: size.clone(),
            instances: 0,
            frames: 0,
            transfer_syntaxes: Vec::new(),
            not_decodable: None,
            files: Vec::new(),
            vois: match image.vois(0) {
                Ok((v, _)) => v.iter().map(|v| v.describe()).collect(),
                Err(e) => vec![e.to_string()],
            },
        });
        e.instances += 1;
        e.frames += u64::from(m.frames);
        if e.size != size && !e.size.ends_with('+') {
            e.size.push('+');
        }
        if !e.transfer_syntaxes.contains(&m.transfer_syntax) {
            e.transfer_syntaxes.push(m.transfer_syntax.clone());
        }
        if let (None, Err(why)) = (&e.not_decodable, decode) {
            e.not_decodable = Some(why);
        }
        e.files.push(file.to_string());
    }

    /// The series, grouped by patient then study.
    pub fn entries(&self) -> Vec<&SeriesEntry> {
        self.series.values().collect()
    }
}

impl DicomImage {
    /// PatientID (empty if absent). Identifying: show only when asked.
    pub fn patient_id(&self) -> String {
        super::opt_str(&self.obj, dicom_dictionary_std::tags::PATIENT_ID)
    }
}
