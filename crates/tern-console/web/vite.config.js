// The console's build: JSX for Preact through esbuild, every file named by a hash of its
// contents under /assets/ (served as immutable), nothing inline (the page's CSP forbids it).
export default {
  base: '/',
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    target: 'es2020',
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
    reportCompressedSize: false,
  },
};
