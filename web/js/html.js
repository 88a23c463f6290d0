// The view layer: Preact with htm's tagged templates (vendored, see web/vendor/README.md), no build step.
import { h, render, Component, Fragment } from '../vendor/preact.module.js';
import htm from '../vendor/htm.module.js';

export const html = htm.bind(h);
export { h, render, Component, Fragment };
export { useState, useEffect, useRef, useMemo, useCallback, useReducer } from '../vendor/hooks.module.js';
