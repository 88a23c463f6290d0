// snake_case <-> camelCase for object keys (values are never touched).

export function camelKey(key) {
  return key.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

export function snakeKey(key) {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z])([A-Z][a-z])/g, '$1_$2').toLowerCase();
}

function isPlainObject(value) {
  if (value === null || typeof value !== 'object') return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

// Objects whose keys are the user's own names, kept as written: an execution's parameter values
// ({ VERSION: '1.2', BUILD_2: 'x' }) would otherwise go out as `version` and come back as `BUILD2`.
const VERBATIM_KEYS = new Set(['parameters']);

function convert(value, keyFn, leaf) {
  if (Array.isArray(value)) return value.map((item) => convert(item, keyFn, leaf));
  if (isPlainObject(value)) {
    const out = {};
    for (const [key, item] of Object.entries(value)) {
      const name = keyFn(key);
      out[name] = VERBATIM_KEYS.has(name) && isPlainObject(item)
        ? Object.fromEntries(Object.entries(item).map(([k, v]) => [k, leaf ? leaf(v) : v]))
        : convert(item, keyFn, leaf);
    }
    return out;
  }
  return leaf ? leaf(value) : value;
}

/** Response JSON: every object key to camelCase, recursively. */
export function camelize(value) {
  return convert(value, camelKey);
}

/** Request JSON: every object key to snake_case, recursively; Dates become RFC 3339 strings. */
export function snakify(value) {
  return convert(value, snakeKey, (leaf) => (leaf instanceof Date ? leaf.toISOString() : leaf));
}
