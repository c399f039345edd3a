// medfm/cornerstone: medfm's box segmentation inside a Cornerstone3D viewer (issue 35,
// item 3: the controller's model, pixels, labelmap and propagation, and the drag tool;
// points from the tool, encode-ahead and volume viewports are still to come).
//
//   import { MedfmSegmentationController } from 'medfm/cornerstone';
//   const controller = new MedfmSegmentationController({ medfm: { backend: 'cpu' } });
//   await controller.initModel();
//   controller.initViewport(viewport);              // a stack viewport showing DICOM images
//   await controller.segment({ box: [x0, y0, x1, y1], points: [[x, y, 1]] });
//   controller.acceptPreview();                     // or rejectPreview(): the labelmap as before
//   await controller.propagate({ box, onProgress }); // through the stack, into the same labelmap
//
// Pixels come from the image Cornerstone3D already decoded (`cache.getImage(imageId)`,
// no second download): its modality values (the dicom-image-loader's rescale applied if
// it has not been) and, by default, the image's own window, so the model input is what
// `medfm segment` gives on the same file whatever W/L the reader has set for display
// (`voi: 'viewport'` takes the viewport's VOI instead). The mask lands in a Cornerstone3D
// labelmap segmentation of the viewport (created if it has none) at its active segment
// index, so the viewport draws it and Cornerstone3D's own tools and exports see it.
//
// Peer dependencies: @cornerstonejs/core and @cornerstonejs/tools 5.x, initialised by the
// app (`init()` of both) before the controller is used.
import * as core from '@cornerstonejs/core';
import * as tools from '@cornerstonejs/tools';
import { medfmCornerstone } from './cornerstone-core.js';

export { medfmCornerstone };
export const { Events, pixelsOf, stackPixelsOf, MedfmSegmentationController, MedfmSegmentationTool } = medfmCornerstone(core, tools);
