// Types of medfm/cornerstone (cornerstone.js): medfm's segmentation in a Cornerstone3D viewer.
import type { CreateOptions, MedFM, PixelsOptions, Point, PropagateResult, SegmentResult, SliceMask } from './index.js';

/** The events of `@cornerstonejs/ai`'s controller (same names), on Cornerstone3D's eventTarget. */
export declare const Events: {
  readonly MODEL_LOADING_STARTED: 'ONNX_MODEL_LOADING_STARTED';
  readonly MODEL_LOADING_COMPLETED: 'ONNX_MODEL_LOADING_COMPLETED';
  readonly MODEL_COMPONENT_LOADED: 'ONNX_MODEL_COMPONENT_LOADED';
};

/** A Cornerstone3D viewport as the controller uses it (a StackViewport). */
export interface ViewportLike {
  id: string;
  getCurrentImageId(): string;
  /** Needed by `interpolateScroll` (a Cornerstone3D stack viewport has both). */
  getCurrentImageIdIndex?(): number;
  setImageIdIndex?(index: number): Promise<unknown>;
  getImageIds(): string[];
  getProperties?(): { voiRange?: { lower: number; upper: number } };
  render(): void;
}

export interface ControllerOptions {
  /** Called with (logger, ...message), as @cornerstonejs/ai's listeners. */
  listeners?: ((logger: string, ...args: unknown[]) => void)[];
  /** MedFM.create options (backend, precision, weights). */
  medfm?: CreateOptions;
  /** An engine the app already created. */
  fm?: MedFM;
  /** 'image' (the image's own window, the model input of `medfm segment`; default) or 'viewport' (its VOI). */
  voi?: 'image' | 'viewport';
  /** The labelmap segmentation to write; default the viewport's first, else a new one. */
  segmentationId?: string;
}

export interface ControllerSegmentResult extends SegmentResult {
  imageId: string;
  labelmapImageId: string;
  segmentationId: string;
  segmentIndex: number;
}

export interface ControllerPropagateResult extends Omit<PropagateResult, 'slices'> {
  slices: (SliceMask & { imageId: string })[];
  segmentationId: string;
  segmentIndex: number;
}

/** The images of a stack, in its order, as one multi-frame `openPixels` spec. */
export declare function stackPixelsOf(images: unknown[], imageIds: string[], options?: { viewport?: ViewportLike; voi?: 'image' | 'viewport' }): PixelsOptions;

/** The pixels of a decoded Cornerstone3D image as `openPixels` takes them. */
export declare function pixelsOf(image: unknown, imageId: string, options?: { viewport?: ViewportLike; voi?: 'image' | 'viewport' }): PixelsOptions;

export declare class MedfmSegmentationController {
  constructor(options?: ControllerOptions);
  initModel(): Promise<MedFM>;
  initViewport(viewport: ViewportLike): void;
  disconnectViewport(viewport?: ViewportLike): void;
  /** Box `[x0, y0, x1, y1]` and points `[x, y, label]` in image pixels; the mask written into the labelmap as a preview. */
  segment(request: { box: [number, number, number, number] | number[]; points?: Point[]; imageId?: string }): Promise<ControllerSegmentResult>;
  /** The prompt of the last `segment()`: what `propagate()` with no box carries. */
  lastPrompt: { imageId: string; box?: number[]; points: Point[] } | null;
  /** The prompt carried through the viewport's stack (medfm's 3D recipe), each slice written into the labelmap as it comes; with no box and no points, the last `segment()`'s prompt from its image. */
  propagate(request?: {
    box?: [number, number, number, number] | number[]; points?: Point[]; extent?: number; minIou?: number;
    onProgress?: (slice: SliceMask & { imageId: string }) => void; signal?: AbortSignal;
  }): Promise<ControllerPropagateResult>;
  /** The viewport's labelmap as a DICOM SEG (Part 10 bytes): one segment per segment index it holds, over the stack's instances; refused ('bad-input') when empty. */
  exportSeg(options?: { label?: string }): Promise<Uint8Array>;
  acceptPreview(): void;
  rejectPreview(): void;
  clear(): void;
  /** Accept the preview, scroll one image in `dir` (1 or -1) and segment it with the prompt of the image left, as a preview; null when the image shown has no prompt or there is no image that way. */
  interpolateScroll(viewport?: ViewportLike, dir?: 1 | -1): Promise<ControllerSegmentResult | null>;
  cacheImageEncodings(imageIds?: string[]): Promise<void>;
  /** Encode the image the viewport rests on (`restMs`, default 250) and `neighbours` (default 1) each side in the background; returns a function that stops it. */
  encodeAhead(options?: { neighbours?: number; restMs?: number }): () => void;
  /** Open images in the engine (once each per engine) and where each is in its series. */
  place(imageIds: string[]): Promise<{ series: string; frame: number; sop: string }[]>;
}

/** Drag a box to segment (drawn while dragging), click to add an include point (Shift: exclude) to the pending prompt; Enter accepts, Escape rejects. Configuration `{ controller, minBoxPixels?, boxColor? }`; the result as a `medfm-segmented` CustomEvent (detail: the controller's result with `box` and `points`), an error as `medfm-error` (`{ code, message, box, points }`). */
export declare class MedfmSegmentationTool {
  static toolName: string;
  constructor(toolProps?: Record<string, unknown>, defaultToolProps?: Record<string, unknown>);
}

/** medfm/cornerstone's exports bound to the given `@cornerstonejs/core` and `@cornerstonejs/tools` modules (cornerstone-core.js; what medfm/ohif uses on OHIF's own copy). */
export declare function medfmCornerstone(core: unknown, tools: unknown): {
  Events: typeof Events;
  pixelsOf: typeof pixelsOf;
  stackPixelsOf: typeof stackPixelsOf;
  MedfmSegmentationController: typeof MedfmSegmentationController;
  MedfmSegmentationTool: typeof MedfmSegmentationTool;
};
