// Serials as the API writes them (SPEC §4): job J20260001, execution J20260001.0001, branch J20260001.0001.0003,
// target T20260001; the numbers grow past 4 digits, never wrap.
const TARGET = /^T\d{8,}$/;
const JOB = /^J\d{8,}$/;
const EXECUTION = /^J\d{8,}\.\d{4,}$/;
const BRANCH = /^(J\d{8,}\.\d{4,})\.\d{4,}$/;

/** What a serial names: 'target' | 'job' | 'execution' | 'branch', or null for anything else. */
export function serialKind(text) {
  const s = String(text ?? '').trim().toUpperCase();
  if (TARGET.test(s)) return 'target';
  if (JOB.test(s)) return 'job';
  if (EXECUTION.test(s)) return 'execution';
  if (BRANCH.test(s)) return 'branch';
  return null;
}

/** The execution serial a branch serial belongs to. */
export function executionOf(branchSerial) {
  const match = BRANCH.exec(String(branchSerial ?? '').trim().toUpperCase());
  return match ? match[1] : null;
}

/** Where the search box goes for `text`: a serial's own page, else the search results. */
export function routeFor(text) {
  const raw = String(text ?? '').trim();
  const s = raw.toUpperCase();
  switch (serialKind(s)) {
    case 'target': return `#/targets/${s}`;
    case 'job': return `#/jobs/${s}`;
    case 'execution': return `#/executions/${s}`;
    case 'branch': return `#/executions/${executionOf(s)}?branch=${s}`;
    default: return `#/search?q=${encodeURIComponent(raw)}`;
  }
}
