// medfm/cornerstone's tool (`MedfmSegmentationTool`): the mouse and keys over the
// controller of cornerstone-core.js. A factory over the app's (or OHIF's) own Cornerstone3D,
// as that module is, so that one copy of Cornerstone3D runs the page.

/** The tool class over `core` (@cornerstonejs/core) and `tools` (@cornerstonejs/tools) 5.x. */
export function medfmTool(core, tools) {
  const { cache, getEnabledElement, utilities } = core;
  const { BaseTool, Enums: ToolsEnums, drawing, utilities: toolUtilities } = tools;

  /**
   * A Cornerstone3D tool: drag a box on a viewport's image (drawn while dragging, in the
   * `boxColor` configuration) and the controller (the tool's `controller` configuration)
   * segments it into the labelmap as a preview; Enter accepts it, Escape rejects it. A
   * click (no drag) adds a point to the prompt of the pending preview (a new prompt when
   * there is none): an include point, or an exclude point with Shift (bind the tool to the
   * primary button with the Shift modifier too); the preview is replaced by the mask of the
   * box and every point so far. The result (or the error) is dispatched on the viewport's element
   * as a `medfm-segmented` (or `medfm-error`) CustomEvent. Register it as any tool:
   * `addTool(MedfmSegmentationTool)`, then in a tool group
   * `addTool(MedfmSegmentationTool.toolName, { controller })` and `setToolActive`.
   */
  class MedfmSegmentationTool extends BaseTool {
    static toolName = 'MedfmSegmentation';

    constructor(toolProps = {}, defaultToolProps = { supportedInteractionTypes: ['Mouse'], configuration: { controller: null, minBoxPixels: 2, boxColor: 'rgb(255, 200, 0)' } }) {
      super(toolProps, defaultToolProps);
      this.drag = null;
      // The prompt of the preview this tool made last: {imageId, box, points, preview}.
      this.prompt = null;
    }

    preMouseDownCallback = (evt) => {
      const { element, currentPoints } = evt.detail;
      const controller = this.configuration.controller;
      const viewport = getEnabledElement(element)?.viewport;
      const imageId = viewport?.getCurrentImageId?.();
      if (!controller || !imageId) return false;
      const exclude = Boolean(evt.detail.event?.shiftKey);
      this.drag = { element, viewport, imageId, exclude, start: currentPoints.world, end: currentPoints.world };
      element.addEventListener(ToolsEnums.Events.MOUSE_DRAG, this.onDrag);
      element.addEventListener(ToolsEnums.Events.MOUSE_UP, this.onUp);
      element.addEventListener(ToolsEnums.Events.MOUSE_CLICK, this.onUp);
      this.listenKeys(element.ownerDocument);
      toolUtilities.triggerAnnotationRenderForViewportIds([viewport.id]);
      return true;
    };

    onDrag = (evt) => {
      if (!this.drag) return;
      this.drag.end = evt.detail.currentPoints.world;
      toolUtilities.triggerAnnotationRenderForViewportIds([this.drag.viewport.id]);
    };

    /** The box being dragged, on its viewport (Cornerstone3D's annotation render calls this). */
    renderAnnotation(enabledElement, svgDrawingHelper) {
      const drag = this.drag;
      if (!drag || enabledElement.viewport.id !== drag.viewport.id) return false;
      const [x0, y0] = enabledElement.viewport.worldToCanvas(drag.start);
      const [x1, y1] = enabledElement.viewport.worldToCanvas(drag.end);
      const corners = [[x0, y0], [x1, y0], [x0, y1], [x1, y1]];
      drawing.drawRectByCoordinates(svgDrawingHelper, 'medfm-box', 'box', corners, { color: this.configuration.boxColor, lineWidth: 2 }, 'medfm-box');
      return true;
    }

    onUp = async (evt) => {
      const drag = this.drag;
      this.drag = null;
      if (!drag) return;
      const { element, viewport, imageId } = drag;
      element.removeEventListener(ToolsEnums.Events.MOUSE_DRAG, this.onDrag);
      element.removeEventListener(ToolsEnums.Events.MOUSE_UP, this.onUp);
      element.removeEventListener(ToolsEnums.Events.MOUSE_CLICK, this.onUp);
      toolUtilities.triggerAnnotationRenderForViewportIds([viewport.id]);
      const end = evt.detail?.currentPoints?.world || drag.end;
      const [x0, y0] = utilities.worldToImageCoords(imageId, drag.start);
      const [x1, y1] = utilities.worldToImageCoords(imageId, end);
      const dragged = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)].map(Math.round);
      const min = this.configuration.minBoxPixels ?? 2;
      const controller = this.configuration.controller;
      let prompt;
      if (dragged[2] - dragged[0] >= min && dragged[3] - dragged[1] >= min) {
        prompt = { imageId, box: dragged, points: [] };
      } else {
        // A click: a point added to the pending preview's prompt (on this image), else a new
        // one. Off the image it is no point (and the preview stays).
        const image = cache.getImage(imageId);
        if (!image || x1 < 0 || y1 < 0 || x1 > image.columns - 1 || y1 > image.rows - 1) return;
        const pending = this.prompt && this.prompt.imageId === imageId && this.prompt.preview && this.prompt.preview === controller.preview;
        prompt = pending ? { ...this.prompt, points: [...this.prompt.points] } : { imageId, box: undefined, points: [] };
        prompt.points.push([Math.round(x1), Math.round(y1), drag.exclude ? 0 : 1]);
        if (pending) controller.rejectPreview();
      }
      const { box, points } = prompt;
      try {
        if (controller.viewport !== viewport) controller.initViewport(viewport);
        const result = await controller.segment({ box, points, imageId });
        this.prompt = { ...prompt, preview: controller.preview };
        element.dispatchEvent(new CustomEvent('medfm-segmented', { detail: { ...result, box, points } }));
      } catch (e) {
        this.prompt = null;
        controller.log('status', `medfm: ${e.message}`);
        element.dispatchEvent(new CustomEvent('medfm-error', { detail: { code: e.code || 'internal', message: e.message, box, points } }));
      }
    };

    /** Enter accepts the preview, Escape rejects it (one listener per document). */
    listenKeys(doc) {
      if (!doc || this.keysOn === doc) return;
      this.keysOn = doc;
      doc.addEventListener('keydown', (e) => {
        const controller = this.configuration.controller;
        if (!controller?.preview) return;
        if (e.key === 'Enter') controller.acceptPreview();
        else if (e.key === 'Escape') controller.rejectPreview();
      });
    }
  }

  return MedfmSegmentationTool;
}
