// tus-js-client with parallelUploads (partial uploads joined by concatenation) in the browser.
// The test picks a file with the #file input and reads the outcome from data attributes.
import * as tus from "tus-js-client";

const input = document.querySelector("#file");
input.addEventListener("change", () => {
  const file = input.files[0];
  const upload = new tus.Upload(file, {
    endpoint: "/files/",
    parallelUploads: 4,
    retryDelays: [0, 1000, 3000],
    metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
    onError: (error) => {
      document.body.dataset.error = String(error);
    },
    onSuccess: () => {
      document.body.dataset.url = upload.url;
    },
  });
  upload.start();
});
