// @ts-check
// How a request can fail, as the rest of the page tells the cases apart.

/** The server answered with an error status. `code` is haul's stable error code if given. */
export class ServerError extends Error {
  /**
   * @param {number} status
   * @param {string | null} code
   * @param {string} message
   * @param {number | null} retryAfter seconds, from Retry-After
   */
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** The request did not get an answer: offline, connection reset, or stalled. */
export class NetworkError extends Error {}
