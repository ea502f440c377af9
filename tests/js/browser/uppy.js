// Uppy's Dashboard with @uppy/tus, as a site would embed it, uploading to the haul server
// that serves this page. The test reads window.result.
import Uppy from "@uppy/core";
import Dashboard from "@uppy/dashboard";
import Tus from "@uppy/tus";
import "@uppy/core/css/style.min.css";
import "@uppy/dashboard/css/style.min.css";

const uppy = new Uppy({ autoProceed: false })
  .use(Dashboard, { inline: true, target: "#uppy", proudlyDisplayPoweredByUppy: false })
  .use(Tus, { endpoint: "/files/", chunkSize: 16 * 1024 * 1024, retryDelays: [0, 1000, 3000] });

uppy.on("complete", (result) => {
  window.result = {
    successful: result.successful.map((file) => file.uploadURL),
    failed: result.failed.map((file) => String(file.error)),
  };
  document.body.dataset.done = "true";
});
