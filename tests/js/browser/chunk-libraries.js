// flow.js or Resumable.js (as the #file input's data-lib says) uploading to haul's /flow, with
// the input's data-method ("multipart" or "octet"). The outcome goes to the body's data
// attributes: data-url (from the last chunk's JSON answer), data-done, data-error.
import Flow from "@flowjs/flow.js";
import Resumable from "resumablejs";

const input = document.querySelector("#file");
const Library = input.dataset.lib === "resumable" ? Resumable : Flow;
const uploader = new Library({
  target: "/flow",
  chunkSize: 1024 * 1024,
  simultaneousUploads: 3,
  testChunks: true,
  method: input.dataset.method || "multipart",
});
uploader.assignBrowse(input);
uploader.on("fileAdded", () => {
  setTimeout(() => uploader.upload()); // once the file is in the list
});
uploader.on("fileSuccess", (file, message) => {
  if (message) document.body.dataset.url = JSON.parse(message).url;
  document.body.dataset.done = "true";
});
uploader.on("fileError", (file, message) => {
  document.body.dataset.error = String(message);
});
