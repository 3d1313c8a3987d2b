/** The signed-in user, read from the access token itself (no call to Supabase). */

/** The `sub` claim of a JWT, unverified (the server verifies); null when there is none. */
export function tokenSubject(token: string | null | undefined): string | null {
  const payload = token?.split(".")[1];
  if (!payload) {
    return null;
  }
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const text = decodeURIComponent(Array.from(atob(base64), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`).join(""));
    const claims = JSON.parse(text) as { sub?: unknown };
    return typeof claims.sub === "string" ? claims.sub : null;
  } catch {
    return null;
  }
}
