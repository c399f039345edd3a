// medfm/ohif/mode: the OHIF v3 mode of medfm's extension (medfm/ohif, ohif.js): a viewer
// at the route `/medfm?StudyInstanceUIDs=...` with the series list on the left, one stack
// viewport, and a toolbar of window/level, pan, zoom, scroll and medfm's three buttons:
// - "medfm box" makes MedfmSegmentation the primary-button tool: drag a box (clicks add
//   include points, Shift-clicks exclude points), Enter accepts, Escape rejects;
// - "medfm propagate" carries the last box through the series into the same labelmap
//   (pressed again while it runs, it cancels);
// - "medfm export SEG" downloads the labelmap as a DICOM SEG from medfm's writer.
// Works with OHIF's default DICOMweb data source (any data source that gives stack
// viewports). Add it beside the extension in app-config.js: `modes: ['/medfm/ohif-mode.js']`.
const ohif = {
  layout: '@ohif/extension-default.layoutTemplateModule.viewerLayout',
  sopClassHandler: '@ohif/extension-default.sopClassHandlerModule.stack',
  thumbnailList: '@ohif/extension-default.panelModule.seriesList',
  viewport: '@ohif/extension-cornerstone.viewportModule.cornerstone',
};

// OHIF imports a mode's extensions by these names when it enters the mode: medfm's is the
// extension module beside this one (the same module, so registered once, when app-config.js
// lists it too).
const EXTENSIONS = {
  '@ohif/extension-default': '^3.0.0',
  '@ohif/extension-cornerstone': '^3.0.0',
  [new URL('./ohif.js', import.meta.url).href]: '^0.1.0',
};

const TOOL_GROUP = 'default';
const MEDFM_TOOL = 'MedfmSegmentation';

const toolButton = (id, icon, label, toolName) => ({
  id,
  uiType: 'ohif.toolButton',
  props: {
    icon,
    label,
    tooltip: label,
    commands: { commandName: 'setToolActive', commandOptions: { toolName, toolGroupIds: [TOOL_GROUP] }, context: 'CORNERSTONE' },
    evaluate: 'evaluate.cornerstoneTool',
  },
});

const actionButton = (id, icon, label, commandName) => ({
  id,
  uiType: 'ohif.toolButton',
  props: { icon, label, tooltip: label, commands: { commandName, context: 'CORNERSTONE' }, evaluate: 'evaluate.action' },
});

export const toolbarButtons = [
  toolButton('WindowLevel', 'tool-window-level', 'Window Level', 'WindowLevel'),
  toolButton('Pan', 'tool-move', 'Pan', 'Pan'),
  toolButton('Zoom', 'tool-zoom', 'Zoom', 'Zoom'),
  toolButton('StackScroll', 'tool-stack-scroll', 'Stack Scroll', 'StackScroll'),
  toolButton('MedfmBox', 'tool-rectangle', 'medfm box', MEDFM_TOOL),
  actionButton('MedfmPropagate', 'icon-labelmap-slice-propagation', 'medfm propagate', 'medfmPropagate'),
  actionButton('MedfmExportSeg', 'tool-capture', 'medfm export SEG', 'medfmExportSeg'),
];

function modeFactory() {
  return {
    id: 'medfm-mode',
    routeName: 'medfm',
    displayName: 'medfm segmentation',
    onModeEnter: ({ servicesManager, extensionManager }) => {
      const { toolbarService, toolGroupService } = servicesManager.services;
      const { toolNames, Enums } = extensionManager.getModuleEntry('@ohif/extension-cornerstone.utilityModule.tools').exports;
      const { controller } = extensionManager.getModuleEntry('medfm.utilityModule.medfm').exports.get();
      const { MouseBindings } = Enums;
      toolGroupService.createToolGroupAndAddTools(TOOL_GROUP, {
        active: [
          { toolName: toolNames.WindowLevel, bindings: [{ mouseButton: MouseBindings.Primary }] },
          { toolName: toolNames.Pan, bindings: [{ mouseButton: MouseBindings.Auxiliary }] },
          { toolName: toolNames.Zoom, bindings: [{ mouseButton: MouseBindings.Secondary }] },
          { toolName: toolNames.StackScroll, bindings: [{ mouseButton: MouseBindings.Wheel }] },
        ],
        passive: [{ toolName: MEDFM_TOOL, configuration: { controller } }],
      });
      toolbarService.register(toolbarButtons);
      toolbarService.updateSection('primary', toolbarButtons.map((b) => b.id));
      // The model loads while the study does.
      controller.initModel().catch(() => {});
    },
    onModeExit: ({ servicesManager, extensionManager }) => {
      const { toolGroupService, uiDialogService, uiModalService } = servicesManager.services;
      extensionManager.getModuleEntry('medfm.utilityModule.medfm')?.exports.get().controller.disconnectViewport();
      uiDialogService?.hideAll?.();
      uiModalService?.hide?.();
      toolGroupService.destroy();
    },
    validationTags: { study: [], series: [] },
    isValidMode: ({ modalities }) => {
      const list = (modalities || '').split('\\');
      return { valid: list.some((m) => !['SM', 'SEG', 'SR', 'RTSTRUCT', 'PR', 'KO', 'DOC'].includes(m)), description: 'medfm segments greyscale images (CT, MR, ...)' };
    },
    routes: [{
      path: 'medfm',
      layoutTemplate: () => ({
        id: ohif.layout,
        props: {
          leftPanels: [ohif.thumbnailList],
          rightPanels: [],
          viewports: [{ namespace: ohif.viewport, displaySetsToDisplay: [ohif.sopClassHandler] }],
        },
      }),
    }],
    extensions: EXTENSIONS,
    hangingProtocol: 'default',
    sopClassHandlers: [ohif.sopClassHandler],
  };
}

export default { id: 'medfm-mode', modeFactory, extensionDependencies: EXTENSIONS };
