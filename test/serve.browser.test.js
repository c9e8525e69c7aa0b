// The search page in headless Chromium (issue 16): pick a reference image, type the modification,
// the top-k grid appears with scores and w; clicking a result re-queries with it as the reference;
// keyboard and labels work; an error names the problem. Debian's /usr/bin/chromium driven by
// playwright-core. Without chromium this file says plainly that it skipped and why.
import test from 'ava';
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GalleryIndex, createServer, Searcher } from '../lib/index.js';
import { tinyCheckpoint } from './helpers/serve_fixture.js';

const CHROMIUM = process.env.DWC_CHROMIUM ?? '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

if (!existsSync(CHROMIUM)) {
  // not silent: the skip is reported in ava's summary with its reason
  test.skip(`web page in Chromium: SKIPPED because ${CHROMIUM} does not exist (apt-get install chromium, or set DWC_CHROMIUM)`, () => {});
  console.warn(`serve.browser.test.js: skipped, ${CHROMIUM} not found (apt-get install chromium)`);
} else {
  let env;
  test.before(async () => {
    const { chromium } = await import('playwright-core');
    const f = await tinyCheckpoint();
    const searcher = await Searcher.open(f.checkpoint);
    const { index } = await GalleryIndex.build({ db: join(f.root, 'db'), gallery: f.gallery, checkpoint: f.checkpoint, embed: (x) => searcher.embedImages(x) });
    const app = await createServer({ searcher, index, logger: false });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const url = `http://127.0.0.1:${app.server.address().port}`;
    const profile = mkdtempSync(join(tmpdir(), 'dwc-chromium-'));
    const browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 60_000 });
    env = { ...f, app, url, browser, images: readdirSync(f.gallery).sort() };
  });
  test.after.always(async () => {
    await env?.browser.close();
    await env?.app.close();
  });

  test.serial('upload, type, results appear with scores and w; clicking a result re-queries', async (t) => {
    const { browser, url, gallery, images } = env;
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(url);
    await page.getByText(/gallery images/).waitFor();
    t.regex(await page.locator('#health').textContent(), new RegExp(`${images.length} gallery images`));
    // labels: the controls are reachable by their accessible names
    await page.getByLabel('Image file').setInputFiles(join(gallery, images[4]));
    t.true(await page.locator('#ref-preview').isVisible());
    t.regex(await page.locator('#ref-preview').getAttribute('alt'), /Reference image/);
    await page.getByLabel(/Modification/).fill('make it red');
    await page.getByLabel('Number of results (k)').fill('6');
    const first = page.waitForResponse((r) => r.url().endsWith('/search'));
    await page.getByRole('button', { name: 'Search' }).click();
    t.is((await first).status(), 200);
    const items = page.locator('#results li');
    await items.nth(5).waitFor();
    t.is(await items.count(), 6);
    t.regex(await page.locator('#weights').textContent(), /image \d+% \/ text \d+%/);
    t.regex(await items.first().textContent(), /#1\s*score -?\d\.\d{3}/);
    // images load, with alt text
    const img = items.first().locator('img');
    t.regex(await img.getAttribute('alt'), /Result 1: /);
    await page.waitForFunction(() => [...document.querySelectorAll('#results img')].every((i) => i.complete && i.naturalWidth > 0));
    // the page shows what the API answers
    const api = await (await first).json();
    const shown = await page.locator('#results .path').allTextContents();
    t.deepEqual(shown, api.results.map((r) => r.path));

    // click the 3rd result: it becomes the reference and the page searches again (JSON, by path)
    const clicked = shown[2];
    const second = page.waitForResponse((r) => r.url().endsWith('/search'));
    await items.nth(2).getByRole('button').click();
    const res2 = await second;
    t.deepEqual(JSON.parse(res2.request().postData()), { image: clicked, text: 'make it red', k: 6 });
    const api2 = await res2.json();
    await page.waitForFunction((p) => document.querySelector('#results .path')?.textContent === p, api2.results[0].path);
    t.false(api2.results.some((r) => r.path === clicked), 'the new reference is not among its own results');
    t.regex(await page.locator('#ref-preview').getAttribute('alt'), new RegExp(clicked.replace('.', '\\.')));

    // keyboard: Tab to a result and press Enter re-queries
    const third = page.waitForResponse((r) => r.url().endsWith('/search'));
    await items.nth(1).getByRole('button').focus();
    await page.keyboard.press('Enter');
    const res3 = await third;
    t.is(res3.status(), 200);
    const api3 = await res3.json();
    await page.waitForFunction((p) => document.querySelector('#results .path')?.textContent === p, api3.results[0].path);
    await page.screenshot({ path: join(env.root, 'serve.png'), fullPage: true });
    if (process.env.DWC_SCREENSHOT) await page.screenshot({ path: process.env.DWC_SCREENSHOT, fullPage: true });
    t.deepEqual(errors, []);
    await page.close();
  });

  test.serial('an error from the API is shown, naming the problem', async (t) => {
    const { browser, url, root } = env;
    const page = await browser.newPage();
    await page.goto(url);
    const bad = join(root, 'broken.png');
    writeFileSync(bad, 'this is not a png');
    await page.getByLabel('Image file').setInputFiles(bad);
    await page.getByLabel(/Modification/).fill('make it red');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.locator('#status.error').waitFor();
    t.regex(await page.locator('#status').textContent(), /query image is unreadable/);
    await page.getByLabel(/Modification/).fill('zorgle');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.waitForFunction(() => /no word the model knows/.test(document.querySelector('#status').textContent));
    t.pass();
    await page.close();
  });
}
