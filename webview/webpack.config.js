// Webpack bundles the browser side: the payload editor webview (webview/src),
// its CSS (with the codicons it uses, webview/src/codicons.css) and the
// codicon font, into dist/webview/. The extension puts the script and the CSS
// inline in the page under the CSP nonce (so the page paints without loading
// a file first); the font stays a file there, the only folder the webview may
// load from (localResourceRoots). esbuild-loader does the TypeScript (types
// are checked by `tsc --noEmit`) and minifies script and CSS.
// The Node side (extension host, helper, CLI) stays with esbuild (scripts/build.mjs).
'use strict';
const path = require('node:path');
const MiniCssExtractPlugin = require('mini-css-extract-plugin');
const { EsbuildPlugin } = require('esbuild-loader');

const root = path.resolve(__dirname, '..');

/** @param {{ production?: boolean }} [opts] */
module.exports = (opts = {}) => ({
  name: 'webview',
  mode: opts.production ? 'production' : 'development',
  target: 'web',
  context: root,
  entry: { webview: './webview/src/main.ts' },
  output: {
    path: path.join(root, 'dist', 'webview'),
    filename: '[name].js',
    // Fonts are referenced relative to the CSS file: no absolute base needed.
    publicPath: '',
    assetModuleFilename: '[name][ext]',
    clean: true,
  },
  // 'eval' source maps would need 'unsafe-eval', which the CSP refuses.
  devtool: opts.production ? false : 'source-map',
  resolve: { extensions: ['.ts', '.js'] },
  module: {
    rules: [
      { test: /\.ts$/, loader: 'esbuild-loader', options: { target: 'es2022' } },
      { test: /\.css$/, use: [MiniCssExtractPlugin.loader, 'css-loader'] },
      { test: /\.(ttf|woff2?)$/, type: 'asset/resource' },
    ],
  },
  plugins: [new MiniCssExtractPlugin({ filename: '[name].css' })],
  // Minified in development too (with its source map): the page carries the script inline, and
  // what the tests and the bench measure is what ships.
  optimization: { minimize: true, minimizer: [new EsbuildPlugin({ target: 'es2022', css: true })] },
  performance: { hints: false },
  stats: 'errors-warnings',
});
