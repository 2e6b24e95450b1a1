// matrix-js-sdk >= 38 declares Node >= 22 and uses Promise.withResolvers (Node 22); this is the
// only thing it lacks on Node 20, so the test of the newest release loads this on older Node
// (`node --import ./node20-polyfill.mjs`). Without it the SDK stalls silently after its first
// /sync.
if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve;
        let reject;
        const promise = new this((res, rej) => {
            resolve = res;
            reject = rej;
        });
        return { promise, resolve, reject };
    };
}
