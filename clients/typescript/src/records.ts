/** The mirrored FitKart tables, their keys, and the shapes of their rows. */

export type Collection = "profiles" | "products" | "orders" | "cart_items" | "wishlist_items" | "user_roles";

/** The columns that identify a row of each table (the server's upsert key). */
export const KEYS: Readonly<Record<Collection, readonly string[]>> = {
  profiles: ["user_id"],
  products: ["id"],
  orders: ["id"],
  cart_items: ["id"],
  wishlist_items: ["user_id", "product_id"],
  user_roles: ["user_id"],
};

/** Tables a user's rows can be cleared from at once with `{user_id}`. */
export const CLEARABLE: ReadonlySet<Collection> = new Set<Collection>(["cart_items", "wishlist_items"]);

/** Any row: Supabase columns as JSON values; columns this release does not know are kept. */
export type RowRecord = Record<string, unknown>;

export interface ProfileRecord extends RowRecord {
  user_id: string;
  id?: string;
  email?: string | null;
  full_name?: string | null;
  avatar_url?: string | null;
}

export interface CartItemRecord extends RowRecord {
  id: string;
  user_id?: string;
  product_id?: string;
  size?: string;
  color?: string | null;
  quantity?: number;
  created_at?: string;
}

export interface OrderRecord extends RowRecord {
  id: string;
  user_id?: string;
  status?: string;
  total_amount?: number;
  items?: RowRecord[];
}

export interface WishlistItemRecord extends RowRecord {
  user_id: string;
  product_id: string;
  id?: string;
}

export interface ProductRecord extends RowRecord {
  id: string;
  seller_id?: string | null;
}

export interface UserRoleRecord extends RowRecord {
  user_id: string;
  role?: "customer" | "seller";
}

/** The parts of a supabase-js `User` that a profile is built from. */
export interface AuthUserLike {
  id: string;
  email?: string | null;
  user_metadata?: { full_name?: string | null; avatar_url?: string | null; [key: string]: unknown } | null;
}

/** One change for the server's batch endpoint. */
export interface Operation {
  op: "upsert" | "delete";
  collection: Collection;
  record: RowRecord;
}

/** The server's error shape. */
export interface ServerError {
  code: number;
  status?: string;
  message?: string;
  errors?: unknown;
}
