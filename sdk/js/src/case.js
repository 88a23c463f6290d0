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

function convert(value, keyFn, leaf) {
  if (Array.isArray(value)) return value.map((item) => convert(item, keyFn, leaf));
  if (isPlainObject(value)) {
    const out = {};
    for (const [key, item] of Object.entries(value)) out[keyFn(key)] = convert(item, keyFn, leaf);
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
