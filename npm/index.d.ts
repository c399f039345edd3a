// TypeScript declarations of the `medfm` package: the API of www/medfm.js (its doc
// comments are the reference; keep the two in step).

/** Where a precision's weights come from: a URL, or the file's bytes. */
export type WeightsSource = string | URL | ArrayBuffer | ArrayBufferView;

export type Backend = 'auto' | 'webgpu' | 'cpu';
export type Precision = 'int8' | 'fp32';

/** The `code` of every rejected promise. */
export type ErrorCode = 'bad-input' | 'unsupported' | 'weights' | 'device' | 'io' | 'internal';

/** An `Error` thrown or rejected by medfm. */
export interface MedfmError extends Error {
  code: ErrorCode;
}

export interface CreateOptions {
  /** 'auto' (default): WebGPU on a real GPU, else the CPU (reason in `info.fallback`). */
  backend?: Backend;
  /** 'int8' (default; shipped in the package) or 'fp32' (pass its weights). */
  precision?: Precision;
  /**
   * The weights of `precision`, or an object of them by precision; pinned by sha256
   * (other weights are refused with code 'weights'). Default: the int8 weights inside
   * the package.
   */
  weights?: WeightsSource | Partial<Record<Precision, WeightsSource>>;
}

export interface ModelInfo {
  backend: 'webgpu' | 'cpu';
  precision: Precision;
  /** Why WebGPU was not used (or why the engine was restarted on the CPU). */
  fallback: string | null;
  software: boolean;
}

/** A series: its `index` and `uid` (SeriesInstanceUID) name it in every call. */
export interface Series {
  index: number;
  uid: string;
  study?: string;
  modality?: string;
  description?: string;
  rows: number;
  cols: number;
  frames: number;
  warnings: string[];
}

export interface OpenError {
  name: string;
  error: string;
  code: ErrorCode;
}

export type SeriesList = Series[] & { errors: OpenError[] };

/** A series' index or its SeriesInstanceUID. */
export type SeriesRef = number | string;

export type Box = [number, number, number, number];
/** [x, y, label]: label 1 includes, 0 excludes (default 1). */
export type Point = [number, number, number?];

export interface SegmentResult {
  /** rows*cols, 0 or 1, row-major. */
  mask: Uint8Array;
  rows: number;
  cols: number;
  area: number;
  /** The model's predicted IoU. */
  iou: number;
  lowConfidence: boolean;
  warnings: string[];
  backend: 'webgpu' | 'cpu';
  ms: number;
  encodeMs: number;
  decodeMs: number;
  postMs: number;
}

export interface SliceMask {
  frame: number;
  mask: Uint8Array;
  area: number;
  iou: number;
}

export type StopReason = 'series-end' | 'extent' | 'empty-mask' | 'low-iou' | 'cancelled';

export interface PropagateResult {
  slices: SliceMask[];
  stopped: [StopReason, StopReason];
  voxels: number;
  volumeMl: number | null;
  warnings: string[];
  ms: number;
}

export interface Segment {
  label: string;
  /** [r, g, b] 0..255. */
  color?: [number, number, number];
  masks: { frame: number; mask: Uint8Array }[];
}

export interface ModelInput {
  /** [3, 256, 256], the model's input. */
  pixels: Float32Array;
  scale: number;
  rows: number;
  cols: number;
  newRows: number;
  newCols: number;
}

export interface DicomwebServer {
  /** The service root, e.g. '/dicom-web'. */
  url: string;
  /** Request headers (e.g. Authorization): sent, never kept. */
  headers?: Record<string, string>;
}

export interface RetrieveProgress {
  instances: number;
  bytes: number;
  series?: Series[];
}

export interface ProgressDetail {
  stage: 'download' | 'init' | 'span';
  loaded?: number;
  total?: number;
  cached?: boolean;
  ms?: number;
  backend?: string;
  name?: string;
}

export interface PixelsOptions {
  /** Modality values (the modality LUT applied), row-major, frames back to back; RGB interleaved (Uint8Array only). */
  data: Int16Array | Uint16Array | Float32Array | Uint8Array;
  width: number;
  height: number;
  /** Default 1. */
  frames?: number;
  /** [x (column), y (row), slice] spacing in mm, as Cornerstone3D's `spacing`. */
  spacing?: ArrayLike<number>;
  /** Patient position (mm) of frame 0's first pixel. */
  origin?: ArrayLike<number>;
  /** Row, column and slice directions (9 numbers), as Cornerstone3D's `direction`. */
  direction?: ArrayLike<number>;
  /** CT, MR, PT, ... (default OT). */
  modality?: string;
  /** The image's own window (the CT recipe uses it). */
  window?: { center: number; width: number };
  photometric?: 'MONOCHROME2' | 'MONOCHROME1' | 'RGB';
  description?: string;
  /** The source instances' UIDs, so that exportSeg references them (one instance per frame). */
  uids?: { study?: string; series?: string; sopClass?: string; instances?: string[]; frameOfReference?: string };
  /** The patient, written into the instances and so into an exported SEG (a PACS files a SEG without it apart from the images). */
  patient?: { name?: string; id?: string; birthDate?: string; sex?: 'M' | 'F' | 'O' | '' };
  /** The study's attributes other than its UID (`uids.study`); dates YYYYMMDD, times HHMMSS. */
  study?: { date?: string; time?: string; id?: string; accession?: string; referringPhysician?: string; description?: string };
}

export class MedFM extends EventTarget {
  /** Start the worker and load the model. Emits 'progress' (CustomEvent<ProgressDetail>). */
  static create(options?: CreateOptions): Promise<MedFM>;
  constructor(options?: CreateOptions);
  readonly backend: 'webgpu' | 'cpu' | null;
  info: ModelInfo | null;
  precision: Precision;
  setBackend(name: Backend, precision?: Precision): Promise<ModelInfo>;

  /** Open DICOM files; resolves to the series of these files (stable order) and `errors`. */
  open(files: Iterable<File | Blob | ArrayBuffer | ArrayBufferView | string | URL> | File | Blob | ArrayBuffer | ArrayBufferView | string | URL | FileList): Promise<SeriesList>;
  /** Retrieve a study or series by WADO-RS, opening instances as they arrive. */
  open(options: {
    dicomweb: DicomwebServer & { study: string; series?: string };
    onProgress?: (p: RetrieveProgress) => void;
    signal?: AbortSignal;
  }): Promise<SeriesList & { retrieved: { instances: number; bytes: number; stopped: string | null; ms: number } }>;
  /**
   * Open pixels a viewer has already decoded (modality values, frames back to back):
   * the same model input as the DICOM file they came from.
   */
  openPixels(pixels: PixelsOptions): Promise<SeriesList>;
  /** Every open series. */
  list(): Series[];

  meta(at: { series: SeriesRef; frame: number }): Record<string, unknown>;
  pixels(at: { series: SeriesRef; frame: number }): Promise<{
    rows: number; cols: number; channels: number; values: Float32Array; min: number; max: number;
    window?: [number, number]; windows: { center: number; width: number; function: string; explanation?: string }[];
  }>;
  render(at: { series: SeriesRef; frame?: number; voi?: number; window?: { center: number; width: number; function?: string }; invert?: boolean }): Promise<{
    rows: number; cols: number; rgba: Uint8Array; voi: unknown; window?: unknown; inverted: boolean; range?: [number, number]; vois: unknown[];
  }>;
  encode(at: { series: SeriesRef; frame: number }): Promise<{ ms: number; cached: boolean }>;
  forget(at: { series: SeriesRef; frame: number }): Promise<void>;
  modelInput(at: { series: SeriesRef; frame: number }): Promise<ModelInput>;
  seriesModelInputs(at: { series: SeriesRef }): Promise<ModelInput[]>;

  segment(request: { series: SeriesRef; frame?: number; box?: Box | number[]; points?: Point[] }): Promise<SegmentResult>;
  propagate(request: {
    series: SeriesRef; frame?: number; box?: Box | number[]; points?: Point[];
    extent?: number; minIou?: number;
    onProgress?: (p: SliceMask & { encodeMs: number; done: number; total: number }) => void;
    signal?: AbortSignal;
  }): Promise<PropagateResult>;
  volumeMl(at: { series: SeriesRef; voxels: number }): Promise<number | null>;

  /** DICOM SEG, Part 10 bytes: one mask over a frame, or segments over a series. */
  exportSeg(request: { series: SeriesRef; frame?: number; mask: Uint8Array; label?: string } | { series: SeriesRef; segments: Segment[] }): Promise<Uint8Array>;
  /** NIfTI-1 of a series, or with `segments` its label map. */
  exportNifti(request: { series: SeriesRef; segments?: Segment[] }): Promise<Uint8Array>;

  /** 256-d L2-normalised embedding of a frame. */
  embed(at: { series: SeriesRef; frame?: number }): Promise<Float32Array>;
  similar(at: { series: SeriesRef; frame?: number; k?: number }): Promise<{ series: number; frame: number; score: number }[]>;
  embedAll(options?: { onProgress?: (done: number, total: number) => void; signal?: AbortSignal }): Promise<number>;

  searchStudies(request: { dicomweb: DicomwebServer; query?: Record<string, string | number> }): Promise<Record<string, unknown>[]>;
  searchSeries(request: { dicomweb: DicomwebServer; study: string; query?: Record<string, string | number> }): Promise<Record<string, unknown>[]>;
  store(request: { dicomweb: DicomwebServer; bytes: ArrayBuffer | ArrayBufferView }): Promise<{ status: number; instances: { uid: string; status: string; reason?: string }[] }>;

  /** Stop the worker. */
  terminate(): void;
}
