// medfm/ohif: the OHIF v3 extension (issue 35, item 4). medfm's box tool, 3D propagation
// and DICOM SEG export inside an OHIF viewer, on the Cornerstone3D that OHIF's own build
// carries. Its mode is medfm/ohif/mode (ohif-mode.js). An OHIF deployment adds, in its
// app-config.js (the module URLs of this package where the site serves it):
//
//   extensions: ['/medfm/ohif.js'],
//   modes: ['/medfm/ohif-mode.js'],
//
// OHIF imports a name it does not bundle at run time (`import(name)`): these two ES modules
// and the files they load by relative URL (www/, the wasm, the weights) are all it needs.
//
// What it registers:
// - the tool `MedfmSegmentation` (medfm/cornerstone's MedfmSegmentationTool) in
//   Cornerstone3D, with one controller for the whole app (one engine, one worker);
// - commands: `medfmPropagate` (the last box through the stack; pressed again while it
//   runs, it cancels), `medfmExportSeg` (the viewport's labelmap as a DICOM SEG, downloaded
//   as a file), `medfmAcceptPreview`, `medfmRejectPreview` (as Enter and Escape);
// - a utility module `medfm.utilityModule.medfm` whose `get()` gives {controller, adapter}.
//
// Configuration (the app-config entry `['/medfm/ohif.js', {...}]`): `medfm` (MedFM.create
// options: backend, precision, weights), `voi` ('image', default, or 'viewport').
import { medfmCornerstone } from './cornerstone-core.js';

const ID = 'medfm';
let bound = null;
let settings = {};

/** The adapter over OHIF's Cornerstone3D and the app's one controller (made on first use,
 * once @ohif/extension-cornerstone has registered its modules). */
function get(extensionManager) {
  if (bound) return bound;
  const common = extensionManager.getModuleEntry('@ohif/extension-cornerstone.utilityModule.common');
  if (!common) throw new Error('medfm/ohif needs @ohif/extension-cornerstone');
  const { cornerstone, cornerstoneTools } = common.exports.getCornerstoneLibraries();
  const adapter = medfmCornerstone(cornerstone, cornerstoneTools);
  cornerstoneTools.addTool(adapter.MedfmSegmentationTool);
  const controller = new adapter.MedfmSegmentationController({ medfm: settings.medfm, voi: settings.voi });
  bound = { adapter, controller, cornerstone };
  return bound;
}

/** The active viewport's Cornerstone3D viewport, made the controller's. */
function activeViewport(servicesManager, extensionManager) {
  const { viewportGridService, cornerstoneViewportService } = servicesManager.services;
  const viewport = cornerstoneViewportService.getCornerstoneViewport(viewportGridService.getActiveViewportId());
  if (!viewport?.getImageIds) throw Object.assign(new Error('medfm works on a stack viewport: show a series first'), { code: 'bad-input' });
  const { controller } = get(extensionManager);
  if (controller.viewport !== viewport) controller.initViewport(viewport);
  return { viewport, controller };
}

function notify(servicesManager, message, type = 'info') {
  servicesManager.services.uiNotificationService?.show({ title: 'medfm', message, type, duration: type === 'error' ? 6000 : 3000 });
}

/** Offer `bytes` as a file download named `name`. */
function download(bytes, name) {
  const url = URL.createObjectURL(new Blob([bytes], { type: 'application/dicom' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

export default {
  id: ID,

  preRegistration({ configuration = {} } = {}) {
    settings = configuration;
  },

  getUtilityModule({ extensionManager }) {
    return [{ name: 'medfm', exports: { get: () => get(extensionManager) } }];
  },

  getCommandsModule({ servicesManager, extensionManager }) {
    let propagating = null;
    const actions = {
      async medfmPropagate() {
        if (propagating) {
          propagating.abort();
          return null;
        }
        const abort = new AbortController();
        propagating = abort;
        try {
          const { controller } = activeViewport(servicesManager, extensionManager);
          notify(servicesManager, 'propagating through the series (press again to cancel)');
          const result = await controller.propagate({ signal: abort.signal });
          notify(servicesManager, `${result.slices.length} slices, stopped ${result.stopped.join('/')}`, 'success');
          return result;
        } catch (e) {
          notify(servicesManager, e.message, 'error');
          return null;
        } finally {
          propagating = null;
        }
      },
      async medfmExportSeg() {
        try {
          const { controller } = activeViewport(servicesManager, extensionManager);
          const bytes = await controller.exportSeg();
          download(bytes, 'medfm-seg.dcm');
          return bytes;
        } catch (e) {
          notify(servicesManager, e.message, 'error');
          return null;
        }
      },
      medfmAcceptPreview() {
        get(extensionManager).controller.acceptPreview();
      },
      medfmRejectPreview() {
        get(extensionManager).controller.rejectPreview();
      },
    };
    return {
      actions,
      definitions: Object.fromEntries(Object.entries(actions).map(([name, fn]) => [name, { commandFn: fn }])),
      defaultContext: 'CORNERSTONE',
    };
  },
};
