/** Replaced at build time (build.mjs) by the package's version. */
declare const __CONVTRACK_VERSION__: string;
