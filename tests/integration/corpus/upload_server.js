// The HTTP server Node.js runs in test_corpus.py: it takes uploads (reading every byte) and
// answers with their size. Bound to the namespace's loopback; the port is argv[2].
const http = require("http");
const port = Number(process.argv[2]);
http.createServer((req, res) => {
  let received = 0;
  req.on("data", (chunk) => { received += chunk.length; });
  req.on("end", () => res.end(`received ${received}\n`));
}).listen(port, "127.0.0.1", () => console.log(`listening ${port} pid=${process.pid}`));
