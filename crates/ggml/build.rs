include!("cuda-link.rs");

fn main() {
    cuda_link();
}
