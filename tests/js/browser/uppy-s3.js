// Uppy's Dashboard with @uppy/aws-s3 in companion mode: haul presigns, the browser sends the
// parts straight to the S3 store. The test reads window.result.
import Uppy from "@uppy/core";
import Dashboard from "@uppy/dashboard";
import AwsS3 from "@uppy/aws-s3";
import "@uppy/core/css/style.min.css";
import "@uppy/dashboard/css/style.min.css";

const uppy = new Uppy({ autoProceed: false })
  .use(Dashboard, { inline: true, target: "#uppy", proudlyDisplayPoweredByUppy: false })
  .use(AwsS3, {
    // The page is served from its own origin; haul is elsewhere (CORS), as on a real site.
    companionEndpoint: new URLSearchParams(location.search).get("haul"),
    shouldUseMultipart: true,
    getChunkSize: () => 5 * 1024 * 1024,
  });

uppy.on("complete", (result) => {
  window.result = {
    successful: result.successful.map((file) => file.response?.body?.location ?? file.uploadURL),
    failed: result.failed.map((file) => String(file.error)),
  };
  document.body.dataset.done = "true";
});
