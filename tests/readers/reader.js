// Call an API with tokend's token, read afresh for each request.
const fs = require("node:fs/promises");

async function accessToken(path) {
  for (let i = 0; i < 300; i++) { // up to 30 s for tokend's first write
    try {
      return (await fs.readFile(path, "utf8")).trim();
    } catch (e) {
      if (e.code !== "ENOENT") throw e;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error(`no token at ${path}`);
}

(async () => {
  const token = await accessToken(process.env.TOKEN_FILE ?? "/run/tokend/blnk/access_token");
  const response = await fetch(process.env.API_URL, {
    headers: { Authorization: `Bearer ${token}` },
  });
  console.log(await response.text());
  process.exitCode = response.ok ? 0 : 1;
})();
